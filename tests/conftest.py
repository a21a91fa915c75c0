"""Test setup: the toolkit's modules live flat in scripts/ (as standalone scripts import them)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
