"""A TrOCR checkpoint's image-processor settings, read the way transformers reads them.

Where they are:
  - transformers 5.2x `TrOCRProcessor.save_pretrained`: processor_config.json, under "image_processor";
  - transformers 4.x / 5.0x, and the hub's microsoft/trocr-*: preprocessor_config.json (the hub's files
    say `"size": 384` and "feature_extractor_type": "ViTFeatureExtractor").
Keys a file leaves out take the defaults of its image-processor class, as transformers does: DeiT, unlike
ViT, resizes to 256x256 and center-crops to 224x224 unless told otherwise. Sizes may be an int (square),
[height, width], {"height", "width"} or {"shortest_edge"} (aspect kept; then a center crop must fix the
size). Neither torch nor transformers is imported here: the MLX processor uses this module, and the
converter cross-checks its reading against the installed transformers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

_STANDARD = dict(do_resize=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                 image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), do_center_crop=False, crop_size=None)
# transformers 5.2x ViTImageProcessor / DeiTImageProcessor class attributes (PIL backend)
CLASS_DEFAULTS = {
    "ViTImageProcessor": {**_STANDARD, "size": {"height": 224, "width": 224}, "resample": 2},
    "DeiTImageProcessor": {**_STANDARD, "size": {"height": 256, "width": 256}, "resample": 3,
                           "do_center_crop": True, "crop_size": {"height": 224, "width": 224}},
}
# older and backend-specific names of the same two classes
_ALIASES = {f"{base}{suffix}": f"{base}ImageProcessor" for base in ("ViT", "DeiT")
            for suffix in ("FeatureExtractor", "ImageProcessorFast", "ImageProcessorPil", "ImageProcessor")}
SETTINGS_FILES = ("processor_config.json", "preprocessor_config.json")  # transformers' own order of preference


@dataclass(frozen=True)
class ImageSettings:
    """Resize (height/width or shortest edge), optional center crop, rescale, normalize: all explicit."""

    image_processor_type: str
    do_resize: bool
    size: dict  # {"height", "width"} or {"shortest_edge"}
    resample: int  # PIL.Image.Resampling value
    do_center_crop: bool
    crop_size: Optional[dict]  # {"height", "width"} (only used with do_center_crop)
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple
    image_std: tuple

    @classmethod
    def from_dict(cls, config: dict, source: str = "image-processor config") -> "ImageSettings":
        """One image-processor dict (a preprocessor_config.json, or processor_config.json's "image_processor")."""
        declared = config.get("image_processor_type") or config.get("feature_extractor_type")
        kind = _ALIASES.get(declared)
        if kind is None:
            raise ValueError(
                f"{source}: image processor {declared!r} is not supported; expected \"image_processor_type\" "
                f"ViTImageProcessor or DeiTImageProcessor (or \"feature_extractor_type\" ViTFeatureExtractor / "
                f"DeiTFeatureExtractor), as TrOCR checkpoints have")
        if config.get("do_pad"):
            raise ValueError(f"{source}: do_pad is set; padding is not part of a TrOCR image processor")
        values = dict(CLASS_DEFAULTS[kind])
        values.update({k: config[k] for k in values if config.get(k) is not None})
        size = _size_dict(values["size"], f"{source}: size")
        crop = _size_dict(values["crop_size"], f"{source}: crop_size") if values["crop_size"] is not None else None
        if set(size) not in ({"height", "width"}, {"shortest_edge"}):
            raise ValueError(f"{source}: size {values['size']} is not supported; expected an int, [height, width], "
                             "{\"height\": H, \"width\": W} or {\"shortest_edge\": N}")
        if crop is not None and set(crop) != {"height", "width"}:
            raise ValueError(f"{source}: crop_size {values['crop_size']} is not supported; expected "
                             "{\"height\": H, \"width\": W} or an int")
        do_crop = bool(values["do_center_crop"])
        if do_crop and crop is None:
            raise ValueError(f"{source}: do_center_crop is set without a crop_size")
        return cls(
            image_processor_type=kind, do_resize=bool(values["do_resize"]), size=size,
            resample=int(values["resample"]), do_center_crop=do_crop, crop_size=crop if do_crop else None,
            do_rescale=bool(values["do_rescale"]), rescale_factor=float(values["rescale_factor"]),
            do_normalize=bool(values["do_normalize"]),
            image_mean=_triple(values["image_mean"], f"{source}: image_mean"),
            image_std=_triple(values["image_std"], f"{source}: image_std"))

    @classmethod
    def vit(cls, image_size) -> "ImageSettings":
        """TrOCR's usual processor: ViT, bilinear resize to the model's (height, width), normalise to [-1, 1]."""
        h, w = image_size
        return cls.from_dict({"image_processor_type": "ViTImageProcessor", "size": {"height": h, "width": w}})

    def output_size(self) -> Optional[tuple[int, int]]:
        """The (height, width) every image comes out at, or None when it depends on the image."""
        if self.do_center_crop:
            return self.crop_size["height"], self.crop_size["width"]
        if self.do_resize and "height" in self.size:
            return self.size["height"], self.size["width"]
        return None

    def check_fits(self, image_size, source: str) -> None:
        """The model takes images of exactly `image_size`; settings that give another size are an error."""
        out = self.output_size()
        if out != tuple(image_size):
            got = f"{out[0]}x{out[1]} images" if out else "images whose size depends on the input"
            raise ValueError(f"{source}: this image processor ({self.describe()}) gives {got}, but the model "
                             f"takes {image_size[0]}x{image_size[1]}")

    def describe(self) -> str:
        parts = []
        if self.do_resize:
            parts.append("resize to " + (f"{self.size['height']}x{self.size['width']}" if "height" in self.size
                                         else f"shortest edge {self.size['shortest_edge']}"))
        if self.do_center_crop:
            parts.append(f"center crop {self.crop_size['height']}x{self.crop_size['width']}")
        return f"{self.image_processor_type}: " + (", ".join(parts) or "no resize")

    def to_dict(self) -> dict:
        """transformers' keys with every setting explicit (a preprocessor_config.json transformers reads back)."""
        d = asdict(self)
        d["image_mean"], d["image_std"] = list(self.image_mean), list(self.image_std)
        d["crop_size"] = self.crop_size
        return d


def _size_dict(size, what: str) -> dict:
    """transformers' get_size_dict with default_to_square=True: int -> square, [h, w] -> height/width."""
    if isinstance(size, bool):
        raise ValueError(f"{what}: {size!r} is not a size")
    if isinstance(size, int):
        return {"height": size, "width": size}
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return {"height": size[0], "width": size[1]}
    if isinstance(size, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in size.values()):
        return {k: int(v) for k, v in size.items()}
    raise ValueError(f"{what}: {size!r} is not a size (expected an int, [height, width] or a dict)")


def _triple(values, what: str) -> tuple:
    values = [values] * 3 if isinstance(values, (int, float)) else list(values)
    if len(values) != 3:
        raise ValueError(f"{what}: expected 3 values (one per RGB channel), got {values}")
    return tuple(float(v) for v in values)


def find_image_settings(folder) -> tuple[dict, Path]:
    """The raw image-processor dict of a checkpoint folder and the file it came from.

    Raises FileNotFoundError naming both files when neither holds it, ValueError for a file that is not JSON.
    """
    folder = Path(folder)
    for name in SETTINGS_FILES:
        path = folder / name
        if not path.exists():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        if name == "processor_config.json":
            if isinstance(data.get("image_processor"), dict):
                return data["image_processor"], path
            continue  # a processor_config.json without image settings: they are in preprocessor_config.json
        return data, path
    raise FileNotFoundError(
        f"{folder}: no image-processor settings; expected processor_config.json with an \"image_processor\" "
        "entry (transformers 5.2x) or preprocessor_config.json (transformers 4.x / 5.0x, the hub's checkpoints)")


def read_image_settings(folder) -> tuple[ImageSettings, Path]:
    """ImageSettings of a checkpoint folder (or a converted model's processor/ folder), and their file."""
    raw, path = find_image_settings(folder)
    return ImageSettings.from_dict(raw, str(path)), path
