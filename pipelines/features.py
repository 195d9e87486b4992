"""Stage `features`: with `train.freeze_backbone: true`, run the backbone once per split and cache
its pooled features, so every model of the matrix trains only its hash head on them.

With the mode off (the default: full fine-tuning) the stage writes a small "disabled" marker, so
the stage always exists and train/evaluate can always depend on its output. Features are also
kept in --cache under a key of backbone, weights, input size and the manifest's content hash, so
switching settings back and forth does not recompute them.

    python pipelines/features.py --params params.yaml --manifest data/splits --out data/features
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _params import read_section  # pipelines/ is sys.path[0] when a stage script runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file with a `train` section")
    parser.add_argument("--manifest", type=Path, default=Path("data/splits"), help="split manifest directory")
    parser.add_argument(
        "--out", type=Path, default=Path("data/features"), help="feature directory (default: %(default)s)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("data/cache/features"),
        help="features kept by key across settings (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from nhl.features import build_features, write_disabled
        from nhl.training import TrainConfig, resolve_device

        section = read_section(args.params, "train")
        config = TrainConfig.from_mapping({k: v for k, v in section.items() if k != "lengths"})
        if not config.freeze_backbone:
            write_disabled(args.out)
            print(f"features: train.freeze_backbone is off (full fine-tuning): nothing to cache -> {args.out}")
            return 0
        meta = build_features(
            args.manifest,
            args.out,
            config.backbone,
            config.backbone_params,
            config.pretrained,
            config.input_size,
            seed=config.seed,
            batch_size=config.batch_size,
            cache_dir=args.cache,
            device=str(resolve_device(config.device)),
        )
    except (ValueError, OSError) as err:  # OSError: unreadable input, unwritable output
        print(f"features: error: {err}", file=sys.stderr)
        return 2
    how = "reused from the cache" if meta["reused"] else "computed"
    print(
        f"features: {config.backbone} ({meta['weights']}, input {config.input_size}): {meta['feature_dim']}-d "
        f"features of every split {how} in {meta['seconds']:.1f} s [{meta['key']}] -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
