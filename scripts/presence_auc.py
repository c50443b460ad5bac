"""Presence AUC of a SAM3 base on an evaluation split (issue 18's diagnosis, as a script).

    python scripts/presence_auc.py --ckpt <run>/checkpoints/epoch_006.ckpt [--split test]
    python scripts/presence_auc.py --base tiny_base            # a conf/model/sam3 config as is

Every image is asked every category (the evaluation's prompt mix). Prints, over all prompts:
- `presence AUC`: sigmoid(presence logit) ranks prompts whose category is in the image above
  those whose category is absent (Mann-Whitney AUC; 0.5 = chance);
- `hard AUC`: the same over present prompts vs absent prompts that share a word with a present
  category ("red star" beside a red circle): whether presence uses shape and colour together;
- `score AUC`: the same for the best detection score of the prompt (max_q sigmoid(logit) *
  sigmoid(presence)), what AP ranks.
Counts are printed with each AUC; an AUC with no positives or no negatives is NaN.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from region_sam3.data.sam3_adapter import to_sam3_batch  # noqa: E402
from region_sam3.eval.postprocess import detection_scores  # noqa: E402
from region_sam3.eval.presence import mann_whitney_auc  # noqa: E402
from region_sam3.lit.evaluation import final_output  # noqa: E402


def model_and_split(args):
    """(module in eval mode, datamodule set up with `args.split` as its test split), seeded."""
    torch.manual_seed(0)
    module, datamodule = _module_and_data(args)
    module.eval()
    datamodule.setup("test")
    return module, datamodule


def _module_and_data(args):
    import hydra
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    if args.ckpt:
        from region_sam3.lit.loading import load_module_from_checkpoint

        module, composed = load_module_from_checkpoint(args.ckpt, with_teacher=False)
        # the checkpoint's datamodule hyper-parameters (its data folder) + the class to build
        data_cfg = OmegaConf.merge({"_target_": "region_sam3.data.datamodule.FindQueryDataModule"},
                                   composed.data)
    else:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            overrides = ["~experiment", f"model/sam3={args.base}", "paths.output_dir=.",
                         "paths.work_dir=."]
            if args.data_dir:
                overrides.append(f"paths.data_dir={args.data_dir}")
            cfg = compose("train", overrides=overrides)
        OmegaConf.resolve(cfg)
        module, data_cfg = hydra.utils.instantiate(cfg.model), cfg.data
    data_cfg = OmegaConf.merge(data_cfg, {"test_split": args.split, "num_workers": 0})
    return module, hydra.utils.instantiate(data_cfg)


def model_source_parser(description: str, split: str) -> argparse.ArgumentParser:
    """`--ckpt` | `--base`, `--split`, `--data-dir`: what `_module_and_data` reads."""
    parser = argparse.ArgumentParser(description=description)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a train.py checkpoint")
    source.add_argument("--base", help="conf/model/sam3/<name> (its own checkpoint)")
    parser.add_argument("--split", default=split)
    parser.add_argument("--data-dir", default=None,
                        help="paths.data_dir for --base (a --ckpt uses its run's data folder)")
    return parser


@torch.no_grad()
def main() -> None:
    parser = model_source_parser(__doc__.splitlines()[0], split="test")
    args = parser.parse_args()
    module, datamodule = model_and_split(args)
    names = datamodule.category_names
    presence, best, present, hard = [], [], [], []
    for batch in datamodule.test_dataloader():
        out = final_output(module.net(to_sam3_batch(batch, module.device)))
        scores = detection_scores(out)  # [B, Q], the score AP ranks
        presence.append(torch.sigmoid(out["presence_logit_dec"].float().reshape(-1)).cpu().numpy())
        best.append(scores.reshape(scores.shape[0], -1).amax(1).cpu().numpy())
        is_present = (~batch.is_negative).cpu().numpy()
        present.append(is_present)
        image_of = batch.query_image_index.cpu().numpy()
        cats = batch.category_ids.cpu().numpy()
        words = {n: set(str(names[int(c)]).split()) for n, c in enumerate(cats)}
        present_words = {}
        for n, ok in enumerate(is_present):
            if ok:
                present_words.setdefault(int(image_of[n]), set()).update(words[n])
        hard.append(np.array([ok or bool(words[n] & present_words.get(int(image_of[n]), set()))
                              for n, ok in enumerate(is_present)]))
    presence, best = np.concatenate(presence), np.concatenate(best)
    present, hard = np.concatenate(present), np.concatenate(hard)
    rows = [("presence AUC", mann_whitney_auc(presence, present)),
            ("hard AUC", mann_whitney_auc(presence[hard], present[hard])),
            ("score AUC", mann_whitney_auc(best, present))]
    print(f"{args.ckpt or args.base} on {args.split}: {len(present)} prompts")
    for name, (auc, n_pos, n_neg) in rows:
        print(f"  {name:13s} {auc:.4f}  ({n_pos} present, {n_neg} absent)")
    print(f"  presence mean: present {presence[present].mean():.3f}, "
          f"absent {presence[~present].mean():.3f}")


if __name__ == "__main__":
    main()
