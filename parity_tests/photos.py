"""Real photos in the sizes, shapes and file modes users feed a classifier, for the image -> logits studies.

The pixels are scikit-learn's two sample photographs (``china.jpg``, ``flower.jpg``, 640 x 427,
shipped with the package), cropped and resized to many sizes and aspect ratios (smaller than the
crop, exactly the resize size, panoramas, tall strips, odd sizes) and written in the modes that take
different decoding paths: RGB JPEG and PNG, greyscale, palette, greyscale + alpha, RGBA PNG, CMYK
JPEG and 16-bit PNG.  Every file goes through each framework's own loader (PIL's ``convert('RGB')``
in both timm and coat_ms).
"""
import os

import numpy as np

# (name, source photo, crop box as fractions (left, top, right, bottom), size (W, H) or None, mode, format)
PHOTOS = [
    ("china_full", 0, (0, 0, 1, 1), None, "RGB", "JPEG"),
    ("flower_full", 1, (0, 0, 1, 1), None, "RGB", "PNG"),
    ("china_portrait", 0, (0.2, 0, 0.78, 1), None, "RGB", "JPEG"),          # 371 x 427: the crop-offset case
    ("flower_square", 1, (0.25, 0.1, 0.72, 0.8), (300, 300), "RGB", "PNG"),
    ("china_small", 0, (0.1, 0.1, 0.9, 0.9), (150, 100), "RGB", "JPEG"),   # smaller than the crop: upscaled
    ("flower_tiny", 1, (0.3, 0.3, 0.7, 0.7), (40, 57), "RGB", "PNG"),
    ("china_panorama", 0, (0, 0.3, 1, 0.55), (640, 160), "RGB", "JPEG"),   # 4:1
    ("flower_strip", 1, (0.4, 0, 0.6, 1), (96, 412), "RGB", "PNG"),        # 1:4.3
    ("china_248", 0, (0.1, 0, 0.9, 1), (331, 248), "RGB", "PNG"),          # short side already 248
    ("flower_224", 1, (0.2, 0.1, 0.8, 0.9), (224, 224), "RGB", "JPEG"),    # already the crop size
    ("china_odd", 0, (0.05, 0.05, 0.95, 0.95), (517, 333), "RGB", "JPEG"),
    ("flower_big", 1, (0, 0, 1, 1), (1200, 801), "RGB", "JPEG"),           # larger than the source
    ("china_gray", 0, (0, 0, 1, 1), (500, 334), "L", "JPEG"),
    ("flower_gray", 1, (0.1, 0, 1, 1), (380, 427), "L", "PNG"),
    ("china_palette", 0, (0.2, 0.2, 1, 1), (400, 300), "P", "PNG"),
    ("flower_gray_alpha", 1, (0, 0.1, 0.9, 1), (360, 300), "LA", "PNG"),
    ("china_rgba", 0, (0, 0, 0.8, 1), (420, 350), "RGBA", "PNG"),
    ("flower_rgba", 1, (0.1, 0.1, 1, 1), (301, 277), "RGBA", "PNG"),
    ("china_cmyk", 0, (0.1, 0, 1, 1), (480, 360), "CMYK", "JPEG"),
    ("flower_cmyk", 1, (0, 0, 0.7, 1), (300, 427), "CMYK", "JPEG"),
    ("china_16bit", 0, (0, 0, 1, 1), (320, 214), "I;16", "PNG"),          # full 16-bit range
    ("flower_16bit_low", 1, (0.2, 0, 1, 1), (260, 347), "I;16 low", "PNG"),  # 16-bit file, values 0..255
    ("china_wide_small", 0, (0, 0.4, 1, 0.6), (300, 61), "RGB", "PNG"),
    ("flower_bmp", 1, (0.1, 0.2, 0.9, 0.8), (250, 190), "RGB", "BMP"),
]
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp"}
# The files timm's folder reader lists (timm.data.get_img_extensions(): .png, .jpg, .jpeg); coat_ms also
# reads BMP, GIF and WebP, so an ImageFolder compared with timm's validation holds only these.
TIMM_FOLDER_FORMATS = ("JPEG", "PNG")


def sample_photos():
    """scikit-learn's two sample photographs (uint8 RGB arrays)."""
    from sklearn.datasets import load_sample_images
    return load_sample_images().images


def _with_mode(image, mode):
    """``image`` (RGB PIL) in ``mode``: alpha from a smooth ramp; 16-bit from the grey levels x 257 (PIL's
    ``convert('RGB')``, which timm and coat_ms both use, clips such a file to white) or as they are ("low")."""
    from PIL import Image
    if mode in ("RGB", "L", "CMYK"):
        return image.convert(mode)
    if mode == "P":
        return image.quantize(colors=64)
    if mode in ("RGBA", "LA"):
        w, h = image.size
        ramp = np.linspace(40, 255, w, dtype=np.float64)[None, :] * np.linspace(0.6, 1.0, h)[:, None]
        out = image.convert(mode[:-1])
        out.putalpha(Image.fromarray(ramp.astype(np.uint8)))
        return out
    if mode.startswith("I;16"):
        grey = np.asarray(image.convert("L"), dtype=np.uint16) * np.uint16(1 if mode.endswith("low") else 257)
        out = Image.fromarray(grey)
        if out.mode != "I;16":
            raise RuntimeError(f"PIL made a {out.mode} image of uint16 data, not I;16")
        return out
    raise ValueError(f"unknown mode {mode}")


def write_photos(folder, classes=1, names=None, formats=None):
    """Write the photos (or those in ``names``, or of file ``formats``) into ``folder``, spread over
    ``classes`` class folders (``class0``, ``class1``, ...; none when ``classes`` is 0); returns their
    paths in PHOTOS order."""
    from PIL import Image

    sources = sample_photos()
    paths = []
    chosen = [p for p in PHOTOS if (names is None or p[0] in names) and (formats is None or p[5] in formats)]
    for i, (name, src, box, size, mode, fmt) in enumerate(chosen):
        photo = Image.fromarray(sources[src])
        w, h = photo.size
        image = photo.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)))
        if size is not None:
            image = image.resize(size, Image.Resampling.LANCZOS)
        where = os.path.join(folder, f"class{i % classes}") if classes else folder
        os.makedirs(where, exist_ok=True)
        path = os.path.join(where, name + EXTENSIONS[fmt])
        _with_mode(image, mode).save(path, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
        paths.append(path)
    return paths
