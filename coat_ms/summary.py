"""Print the table of CoaT variants: parameters and GMACs computed by coat_ms's own code.

    python -m coat_ms.summary [--image-size H W]
"""
import argparse

from .cli import run_cli


def variant_table(image_size=(224, 224)):
    """Rows of (name, params in M, GMACs, embed dims, serial depths, parallel depth)."""
    from . import create_model
    from .flops import count_macs, count_params
    from .models.coat import VARIANTS

    rows = []
    for name in VARIANTS:
        model = create_model(name)
        rows.append((name, count_params(model) / 1e6, count_macs(model, image_size) / 1e9,
                     model.embed_dims, model.serial_depths, model.parallel_depth))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m coat_ms.summary", description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", nargs=2, type=int, default=(224, 224), metavar=("H", "W"))
    args = parser.parse_args(argv)
    H, W = args.image_size
    if min(H, W) < 32 or H % 32 or W % 32:
        from .errors import CoatError
        raise CoatError(f"--image-size {H} {W}: height and width must be multiples of 32 (CoaT's patch grid)")
    print(f"| model | params (M) | GMACs @ {H}x{W} | embed dims | serial depths | parallel depth |")
    print("|---|---:|---:|---|---|---:|")
    for name, params, gmacs, dims, depths, parallel in variant_table((H, W)):
        print(f"| {name} | {params:.2f} | {gmacs:.2f} | {list(dims)} | {list(depths)} | {parallel} |")
    return 0


if __name__ == "__main__":
    run_cli(main)
