"""The toolkit as a package: `from scripts.mlx_processor import load_mlx_processor` from the repository root."""
