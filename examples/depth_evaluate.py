"""Evaluate the IP-Basic reference outputs with the KITTI devkit metrics (exact reimplementation).

Pairs every shipped IP-Basic output (``reference/ipbasic/tk_*.png``) with the KITTI frame's
ground truth (cropped to 1216 x 352 for the ``crop`` outputs), runs
:func:`geodepth.metrics.evaluate_folders` the way the devkit's ``evaluate_depth`` would, prints
the table in leaderboard units (mm, 1/km), compares every number with the devkit's own printout
(``reference/devkit/per_image_metrics.csv``), and saves a comparison figure (RGB / sparse input
/ IP-Basic / error) to ``out/examples/depth_evaluate.png``.

Run:  python examples/depth_evaluate.py [--data DIR] [--out DIR]
"""
from __future__ import annotations

import argparse
import csv
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from geodepth.metrics import KITTI_METRICS, evaluate_folders, format_kitti_table, read_kitti_depth_png
from geodepth.viz import completion_figure

REPO = Path(__file__).resolve().parents[1]
CROP = (slice(23, 375), slice(13, 1229))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("GEODEPTH_DATA", REPO.parent / "shared" / "data")),
                    help="the shared sample-data folder (holds kitti_depth/ and reference/)")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "examples")
    args = ap.parse_args()
    kitti = args.data / "kitti_depth" / "2011_09_26_drive_0001_sync_0000000005"
    ref = args.data / "reference"
    preds = sorted((ref / "ipbasic").glob("tk_*.png"))
    if not preds:
        raise SystemExit(f"no IP-Basic reference PNGs under {ref / 'ipbasic'}")
    print(f"{len(preds)} IP-Basic outputs in {ref / 'ipbasic'}")

    with tempfile.TemporaryDirectory() as tmp:
        pd, gd = Path(tmp) / "pred", Path(tmp) / "gt"
        pd.mkdir(), gd.mkdir()
        for p in preds:  # same names in both folders -> sorted pairing pairs them up
            cam = p.name[len("tk_image"):len("tk_image") + 2]
            gt = np.asarray(Image.open(kitti / f"groundtruth_{cam}.png"))
            if "_crop" in p.name:
                gt = gt[CROP]
            Image.fromarray(gt.astype(np.uint16)).save(gd / p.name)
            (pd / p.name).symlink_to(p)
        res = evaluate_folders(pd, gd, progress=False)
    for r in res["per_image"]:
        r["name"] = Path(r["pred"]).stem
    print(format_kitti_table(res))

    # compare with the devkit's own numbers
    rows = {}
    for r in csv.DictReader(open(ref / "devkit" / "per_image_metrics.csv")):
        if r["encoding"] == "round":
            rows[f"tk_image{r['image'][-2:]}_{r['crop']}__{r['config']}"] = r
    worst = dict.fromkeys(KITTI_METRICS, 0.0)
    for r in res["per_image"]:
        d = rows[r["name"]]
        for k in KITTI_METRICS:
            worst[k] = max(worst[k], abs(r[k] - float(d[k])) / abs(float(d[k])))
    print("\nmax relative deviation from the devkit's printout (9 significant digits):")
    for k, v in worst.items():
        print(f"  {k:<22s} {v:.2e}")

    # one picture: the full-frame fast_gauss_extrap output of image_02
    name = "tk_image02_full1242x375__fast_gauss_extrap.png"
    rgb = np.asarray(Image.open(kitti / "image_02.png").convert("RGB")).transpose(2, 0, 1)
    fig_path = args.out / "depth_evaluate.png"
    completion_figure(fig_path, image=rgb, sparse=read_kitti_depth_png(kitti / "velodyne_raw_02.png"),
                      dense=read_kitti_depth_png(ref / "ipbasic" / name),
                      gt=read_kitti_depth_png(kitti / "groundtruth_02.png"), error_vmax=3.0, overwrite=True)
    print(f"\nsaved {fig_path}")


if __name__ == "__main__":
    main()
