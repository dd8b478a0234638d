"""Command line: ``cyclecmda <command> ...`` (also ``python -m cyclecmda``)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from cyclecmda import __version__
from cyclecmda.errors import CycleCMDAError

CONFIG_HELP = "YAML config file(s), merged in order, then key=value overrides (e.g. train.max_steps=100)"


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from cyclecmda.data.demo import generate_demo_data

    summary = generate_demo_data(args.out_dir, n_train=args.n_train, n_test=args.n_test, size=args.size, seed=args.seed)
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    print(f"demo data written to {args.out_dir} ({counts})")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from cyclecmda.config import load_config, split_cli_args, to_yaml

    paths, overrides = split_cli_args(args.config)
    print(to_yaml(load_config(paths, overrides)), end="")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from cyclecmda.config import load_config, split_cli_args
    from cyclecmda.train.trainer import train

    paths, overrides = split_cli_args(args.config)
    train(load_config(paths, overrides))
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _pixel_limit(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of pixels, or 0 for no limit, got {text}")
    return value


def _add_pixel_limit(parser: argparse.ArgumentParser, what: str) -> None:
    from cyclecmda.data.images import MAX_IMAGE_PIXELS

    parser.add_argument("--max-image-pixels", type=_pixel_limit, default=MAX_IMAGE_PIXELS, metavar="N",
                        help=f"{what} larger than N pixels (width x height) are refused as unusable; "
                             f"0: no limit (default {MAX_IMAGE_PIXELS}, PIL's decompression-bomb threshold)")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cyclecmda.evaluate.translator import check_source, evaluate, features_record, format_table, write_json
    from cyclecmda.files import ensure_writable_dir

    path = check_source(args.path)  # before the output folder is made
    out = Path(args.json) if args.json else (path if path.is_dir() else path.parent) / "evaluation.json"
    # before any work: metrics that cannot be written are not worth computing
    ensure_writable_dir(out.parent, "--json" if args.json else "where evaluation.json goes; choose another with --json")
    extractor = None
    if args.features != "none":
        from cyclecmda.evaluate.metrics import create_feature_extractor

        extractor = create_feature_extractor(args.features, weights=args.features_weights)
    metrics = evaluate(args.path, args.a, args.b, paired=args.paired, extractor=extractor, device=args.device,
                       max_image_pixels=args.max_image_pixels)
    print(format_table(metrics))
    write_json(metrics, out, about={"features": features_record(extractor), "resize_to": "data.crop_size of the config"})
    print(f"written to {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from cyclecmda.export.write import DIRECTIONS, export_checkpoint

    directions = DIRECTIONS if args.direction == "both" else (args.direction,)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    for folder in export_checkpoint(args.checkpoint, args.out, directions, formats, task=args.task,
                                    overwrite=args.overwrite):
        print(f"exported {folder}")
    return 0


def _cmd_translate(args: argparse.Namespace) -> int:
    from cyclecmda.export.translate import format_summary, translate_folder

    summary = translate_folder(
        args.artifact, args.input, args.output, batch_size=args.batch_size, device=args.device,
        tile=args.tile, overlap=args.overlap, strength=args.strength, max_image_pixels=args.max_image_pixels,
        units=args.units, overwrite=args.overwrite,
    )
    print(format_summary(summary))
    return 0 if summary["translated"] > 0 else 1


def _artifact_arm(text: str) -> tuple:
    """``[NAME=]DIR`` -> (arm name, folder); without a name the arm is named by the folder as given."""
    from pathlib import Path

    if "=" in text and not Path(text).exists():
        name, folder = text.split("=", 1)
        if name and folder:
            return name, folder
    return text, text


def _cmd_downstream(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cyclecmda.config import load_config, split_cli_args
    from cyclecmda.evaluate.downstream import format_table, measure
    from cyclecmda.files import ensure_writable_dir, output_error

    paths, overrides = split_cli_args(args.config)
    cfg = load_config(paths, overrides)
    out = Path(args.out) if args.out else None
    if out is not None:
        ensure_writable_dir(out.parent, "--out")  # before any work
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
    report = measure(cfg, dict(_artifact_arm(a) for a in args.artifact or []), task=args.task, arms=arms,
                     model=args.model, weights=args.weights or "", width=args.width, epochs=args.epochs,
                     seeds=args.seeds, batch_size=args.batch_size, lr=args.lr, size=args.size, device=args.device,
                     progress=True)
    text = json.dumps(report, indent=2)
    print(text if args.json else format_table(report))
    if out is not None:
        try:
            out.write_text(text + "\n")
        except OSError as exc:
            raise output_error(exc, out, "--out") from None
        if not args.json:
            print(f"written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cyclecmda",
        description="Train CycleGAN translators between unpaired image modalities and export them as augmentations.",
    )
    parser.add_argument("--version", action="version", version=f"cyclecmda {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a translator from a config")
    p.add_argument("config", nargs="+", metavar="CONFIG|key=value", help=CONFIG_HELP)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("config", help="print the resolved config (checks it without training)")
    p.add_argument("config", nargs="*", metavar="CONFIG|key=value", help=CONFIG_HELP)
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("export", help="export generators as standalone translators (model.pt2; ONNX and TorchScript on request)")
    p.add_argument("checkpoint", help="a checkpoint written by 'cyclecmda train'")
    p.add_argument("-o", "--out", required=True, help="output folder; one subfolder per direction (a2b, b2a)")
    p.add_argument("--direction", choices=["a2b", "b2a", "both"], default="both")
    p.add_argument("--format", default="pt2", help="comma-separated: pt2, onnx, torchscript (legacy) (default pt2)")
    p.add_argument("--task", action="store_true",
                   help="also write downstream/: the downstream model of a loss.semantic run, trained on translated "
                        "A images, as a standalone classifier or segmenter of B images")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an export already in the output folder (refused without it)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("evaluate", help="FID/KID, cycle and paired errors of a checkpoint or export on test folders")
    p.add_argument("path", metavar="CHECKPOINT|ARTIFACT", help="a training checkpoint (.pt) or an export folder")
    p.add_argument("--a", help="folder of domain-A test images")
    p.add_argument("--b", help="folder of domain-B test images")
    p.add_argument("--paired", action="store_true", help="the folders hold true counterparts with the same file names")
    p.add_argument("--features", choices=["inception", "torchvision_inception", "none"], default="inception",
                   help="feature network for FID/KID (inception: the TF-ported FID Inception of pytorch-fid, "
                        "torch-fidelity and torchmetrics, comparable with papers; torchvision_inception: "
                        "torchvision's ImageNet Inception-v3, not comparable with papers; none: skip FID/KID)")
    p.add_argument("--features-weights", help="the feature network's weights file (default: the torch hub cache; the "
                                              "FID Inception is downloaded there on first use)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="where to write the metrics (default: evaluation.json beside the input)")
    _add_pixel_limit(p, "test images")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("translate", help="translate image files with an exported translator")
    p.add_argument("artifact", help="an exported direction folder (e.g. exports/a2b)")
    p.add_argument("input", help="an image file, or a folder searched recursively for images")
    p.add_argument("output", help="output folder; files keep their relative paths and names")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="images of one size per forward (default 8)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--tile", type=_positive_int, help="translate images larger than this in overlapping tiles")
    p.add_argument("--overlap", type=int, help="tile overlap in pixels (default tile // 4)")
    p.add_argument("--strength", type=float, default=1.0,
                   help="blend of original (0) and translation (1), default 1")
    p.add_argument("--units", choices=["target", "input"], default="target",
                   help="target (default): the target domain's dtype and raw value range, as trained, so the "
                        "output is a dataset of that domain; input: each input's own dtype and range")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files in the output folder that have the names translations are written under "
                        "(refused without it)")
    _add_pixel_limit(p, "images")
    p.set_defaults(func=_cmd_translate)

    p = sub.add_parser("downstream", help="what a translator is worth: the same model trained on A as it is, on A "
                                          "translated, and on real B, tested on labelled B test images")
    p.add_argument("config", nargs="+", metavar="CONFIG|key=value",
                   help=CONFIG_HELP + "; the data come from its data section (data.a.labels, masks or boxes, "
                        "data.b.test_labels, test_masks or test_boxes, and data.b.labels, masks or boxes for the "
                        "real_b and mixed arms)")
    p.add_argument("--artifact", action="append", metavar="[NAME=]DIR",
                   help="an exported A -> B translator folder; one 'translated' arm each, named NAME or by the "
                        "folder, and one 'mixed' arm NAME+real_b (repeat for several)")
    p.add_argument("--task", choices=["class", "mask", "boxes"],
                   help="class (data.*.labels, accuracy), mask (data.*.masks, mean IoU) or boxes (data.*.boxes, "
                        "mAP@0.5 and mAP@0.5:0.95); default: the first that data.a sets")
    p.add_argument("--arms", help="comma-separated, of as_is, translated, real_b, mixed (default: all the config and "
                                  "artifacts allow)")
    p.add_argument("--model", help="the downstream network: a task network (small_classifier, small_segmenter), a "
                                   "detector (small_detector) or torchvision.NAME, built untrained (default: "
                                   "small_classifier for class, small_segmenter for mask, small_detector for boxes)")
    p.add_argument("--weights", help="a local state dict (torch.load weights_only) loaded into the model where names "
                                     "and shapes fit")
    p.add_argument("--width", type=_positive_int,
                   help="width of a task network or detector (default 16 for class, 8 for mask, 16 for boxes)")
    p.add_argument("--epochs", type=_positive_int,
                   help="training epochs (default 80 for class, 100 for mask, 60 for boxes)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED",
                   help="one training run per arm and seed (default 0 1 2)")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3 for class, 2e-3 for mask and boxes)")
    p.add_argument("--size", type=_positive_int, help="images are resized to SIZE x SIZE (default data.crop_size)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--out", metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.set_defaults(func=_cmd_downstream)

    p = sub.add_parser("demo-data", help="generate the built-in unpaired visible/thermal demo dataset")
    p.add_argument("out_dir", help="output folder (trainA, trainB, testA, testB are created in it)")
    p.add_argument("--n-train", type=_positive_int, default=300, help="training images per domain (default 300)")
    p.add_argument("--n-test", type=_positive_int, default=60, help="paired test scenes (default 60)")
    p.add_argument("--size", type=_positive_int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo_data)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(list(argv) if argv is not None else None)
    # Configs and key=value overrides may follow a command's options too (`downstream CONFIG
    # --task boxes data.b.test_root=...`): argparse stops its positional list at the first option.
    if extra and isinstance(getattr(args, "config", None), list) and not any(x.startswith("-") for x in extra):
        args.config += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except CycleCMDAError as exc:
        print(f"error: {_first_lines(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _first_lines(exc: BaseException) -> str:
    """The message without a DataLoader worker's re-raised traceback."""
    text = str(exc)
    marker = "\nOriginal Traceback"
    if marker in text:
        tail = text.split(marker, 1)[1].strip().splitlines()
        return tail[-1].split(": ", 1)[-1] if tail else text
    return text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
