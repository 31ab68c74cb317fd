"""The 2:4 study: each row adds one technique (RIA score, channel permutation, DSnoT, block-wise
reconstruction) on SmolLM2-135M, for 2:4, 4:8 and 50% unstructured, on several calibration seeds.

    python bench/experiments/nm_study.py --patterns 2:4 --seeds 0          # one seed of the 2:4 rows
    python bench/experiments/nm_study.py --patterns 2:4 --rows wanda,sparsegpt --seeds 0,1,2
    python bench/experiments/nm_study.py --table                           # the README table from the JSON
    python bench/experiments/nm_study.py --flops                           # each technique's cost at 7B, on paper

Each (pattern, row, seed) is compressed in-process (calibration: c4, 128 x 512 windows drawn with that
seed; forwards as `--calib-dtype`), scored on WikiText-2 (seqlen 2048, the first `--limit` windows: the
standard CPU protocol at 40) and written to `{out}/{pattern}_{row}_seed{seed}.json` with its recipe, the
pruning wall time and what reconstruction did per block. Existing results are skipped (`--force` re-runs),
so an interrupted study resumes. With `--continue-saved --save-dir D`, an int4 cell whose cell without int4
was saved in D (e.g. a healed one) runs only the quantize step on that checkpoint (its masks kept), and a
healing row whose row without healing was saved runs only the heal (distilling --model, as the whole
recipe's heal would); either adds the saved cell's times (its record must be under --out: the 860k healing
row's is in bench/results/nm_study/saved_bases/). The table gives, per row, the mean perplexity over the
seeds measured and their spread (max - min): a gain smaller than the spread of the calibration draw is not
a gain.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "results" / "nm_study"

#: block-wise reconstruction as the first study rows ran it (the dense block's outputs as the target), and
#: against the original model's hidden states (the block also makes up for the errors before it)
TO_BLOCK = {"epochs": 4, "lr": 2e-3, "nsamples": 32, "target": "block"}
TO_MODEL = {**TO_BLOCK, "target": "model"}
#: 50% only: the searched per-module sparsities, then the fit against the model over every calibration window
#: (128) for 4 epochs with the rate decayed linearly to 0 (the base of the 128x4-linear rows)
SEARCH_128X4_LINEAR = {"method": "sparsegpt", "allocation": "search",
                       "reconstruct": {**TO_MODEL, "epochs": 4, "nsamples": 128, "schedule": "linear"}}
#: SparseGPT + permutation + the 4-epoch fit against the model: the base of the 2:4 / 4:8 healing rows
SG_PERMUTE_FIT = {"method": "sparsegpt", "permute": True, "reconstruct": TO_MODEL}
#: the short heal those rows compare options of: 40 steps of 4 x 512 C4 tokens at peak lr 5e-4
SHORT_HEAL = {"tokens": 81_920, "lr": 5e-4}
#: a row's calibration settings (row key -> compress() argument), not recipe options: a row that names one
#: overrides the study's default (--nsamples, compress()'s own batch size); the JSON's `calibration` records it
CALIB_KEYS = {"calib_batch_size": "calib_batch_size", "calib_nsamples": "nsamples"}
#: row name -> prune options added to {pattern / sparsity}; each row adds one technique to one above it
ROWS: dict[str, dict] = {
    "wanda": {"method": "wanda"},
    "sparsegpt": {"method": "sparsegpt"},
    "ria": {"method": "ria"},
    "ria+permute": {"method": "ria", "permute": True},
    "ria+permute+dsnot": {"method": "ria", "permute": True, "dsnot": True},
    "ria+permute+dsnot+reconstruct": {"method": "ria", "permute": True, "dsnot": True, "reconstruct": TO_BLOCK},
    "ria+permute+dsnot+reconstruct-model": {"method": "ria", "permute": True, "dsnot": True,
                                            "reconstruct": TO_MODEL},
    "sparsegpt+permute": {"method": "sparsegpt", "permute": True},
    "sparsegpt+permute+reconstruct": {"method": "sparsegpt", "permute": True, "reconstruct": TO_BLOCK},
    "sparsegpt+permute+reconstruct-model": SG_PERMUTE_FIT,
    "ria+dsnot": {"method": "ria", "dsnot": True},
    "ria+dsnot+reconstruct-model": {"method": "ria", "dsnot": True, "reconstruct": TO_MODEL},
    "sparsegpt+reconstruct-model": {"method": "sparsegpt", "reconstruct": TO_MODEL},
    # a longer fit: 8 epochs over 64 windows (64 Adam steps per block instead of 16)
    "sparsegpt+permute+reconstruct-model-64x8": {"method": "sparsegpt", "permute": True,
                                                  "reconstruct": {**TO_MODEL, "epochs": 8, "nsamples": 64}},
    # 50% only: the allocation search's per-module sparsities (the prune table's sparsegpt-50-search, 36.70)
    # under the longer fit
    "sparsegpt+search+reconstruct-model-64x8": {"method": "sparsegpt", "allocation": "search",
                                                "reconstruct": {**TO_MODEL, "epochs": 8, "nsamples": 64}},
    # the same over every calibration window (128): twice the fitting data of 64x8, twice its time
    "sparsegpt+search+reconstruct-model-128x8": {"method": "sparsegpt", "allocation": "search",
                                                 "reconstruct": {**TO_MODEL, "epochs": 8, "nsamples": 128}},
    # 64x8 with the learning rate decayed linearly to zero over the fit: its Adam steps move each weight by
    # about lr whatever the gradient's size, so a constant rate keeps jumping around the optimum at the end
    "sparsegpt+search+reconstruct-model-64x8-linear": {"method": "sparsegpt", "allocation": "search",
                                                       "reconstruct": {**TO_MODEL, "epochs": 8, "nsamples": 64,
                                                                       "schedule": "linear"}},
    # as many Adam steps, over every calibration window (128) for 4 epochs: each step on other data
    "sparsegpt+search+reconstruct-model-128x4-linear": SEARCH_128X4_LINEAR,
    # 128x4-linear in Adam steps of 2 windows instead of 8 (calibration batches of 2): four times the steps
    # (256) for the same forward/backward work; the SparseGPT statistics are the same sums either way
    "sparsegpt+search+reconstruct-model-128x4-linear-b2": {**SEARCH_128X4_LINEAR, "calib_batch_size": 2},
    # and in steps of one window (512 steps): b8 -> b2 was the largest gain of the fits above
    "sparsegpt+search+reconstruct-model-128x4-linear-b1": {**SEARCH_128X4_LINEAR, "calib_batch_size": 1},
    # b1 fitted the windows better than b2 (block error -5%) but not WikiText-2: twice the calibration windows
    # (256, each seen in 2 epochs, half as often as in b2) for as many 2-window steps as b2 (256)
    "sparsegpt+search+reconstruct-model-256x2-linear-b2": {
        **SEARCH_128X4_LINEAR, "reconstruct": {**SEARCH_128X4_LINEAR["reconstruct"], "epochs": 2, "nsamples": 256},
        "calib_batch_size": 2, "calib_nsamples": 256},
    "sparsegpt+permute+reconstruct-model+heal": {**SG_PERMUTE_FIT, "heal": True},
    # twice the tokens, at the first row's learning rate and at 2.5x it (its loss curve flattened after a tenth)
    "sparsegpt+permute+reconstruct-model+heal-655k": {**SG_PERMUTE_FIT, "heal": {"tokens": 655_360}},
    "sparsegpt+permute+reconstruct-model+heal-655k-lr5e-4": {**SG_PERMUTE_FIT, "heal": {"tokens": 655_360, "lr": 5e-4}},
    # the healed recipe's heal from the longer fit (64x8: 49.06 before healing on seed 0, where the 4-epoch fit
    # that best-2-4-healed.yaml heals scored 55.36)
    "sparsegpt+permute+reconstruct-model-64x8+heal-655k-lr5e-4": {
        "method": "sparsegpt", "permute": True, "reconstruct": {**TO_MODEL, "epochs": 8, "nsamples": 64},
        "heal": {"tokens": 655_360, "lr": 5e-4}},
    # the same with packed windows (`heal.windows: packed`): every C4 document once per pass, joined and cut, where
    # the row above drew 1,280 windows from the 548 documents longer than 512 tokens, each document as likely as
    # any other, so that short ones repeat and 31% of the sample's tokens (its shorter documents) never appear
    "sparsegpt+permute+reconstruct-model-64x8+heal-655k-lr5e-4-packed": {
        "method": "sparsegpt", "permute": True, "reconstruct": {**TO_MODEL, "epochs": 8, "nsamples": 64},
        "heal": {"tokens": 655_360, "lr": 5e-4, "windows": "packed"}},
    # the same with the steps the rest of the 2-hour budget buys once the LM heads run inside the loss (420 steps
    # of 4 x 512; healed from the saved 64x8 row with --continue-saved, whose pruning took 2,091 s)
    "sparsegpt+permute+reconstruct-model-64x8+heal-860k-lr5e-4-packed": {
        "method": "sparsegpt", "permute": True, "reconstruct": {**TO_MODEL, "epochs": 8, "nsamples": 64},
        "heal": {"tokens": 860_160, "lr": 5e-4, "windows": "packed"}},
    # the same heal from the same saved base with its windows drawn by seed 2 instead of 1 (another order of the
    # documents, so another 11% of the sample left out): the heal's own spread, which any gain claimed between
    # two healed rows of one calibration draw must exceed
    "sparsegpt+permute+reconstruct-model-64x8+heal-860k-lr5e-4-packed-heal-seed2": {
        "method": "sparsegpt", "permute": True, "reconstruct": {**TO_MODEL, "epochs": 8, "nsamples": 64},
        "heal": {"tokens": 860_160, "lr": 5e-4, "windows": "packed", "seed": 2}},
    # more steps, sized from a probe where compiled steps (`heal.compile`) took 19% less than eager ones: 560 steps
    # of 4 x 512, 1.19 passes over the C4 sample's 966k tokens (the second in another order), with the fused AdamW;
    # the whole row from scratch (it ran 129 min: over the 2 hours; and 37.13, no better than 860k's 36.43)
    "sparsegpt+permute+reconstruct-model-64x8+heal-1147k-lr5e-4-packed-compiled": {
        "method": "sparsegpt", "permute": True, "reconstruct": {**TO_MODEL, "epochs": 8, "nsamples": 64},
        "heal": {"tokens": 1_146_880, "lr": 5e-4, "windows": "packed", "compile": True}},
    # a short heal (40 steps) by the KL of the logits alone and with SquareHead feature distillation added
    # (weight 1, the paper's): the same pruned model and windows, a paired comparison of the two losses
    "sparsegpt+permute+reconstruct-model+heal-82k-lr5e-4": {**SG_PERMUTE_FIT, "heal": SHORT_HEAL},
    "sparsegpt+permute+reconstruct-model+heal-82k-lr5e-4-squarehead": {
        **SG_PERMUTE_FIT, "heal": {**SHORT_HEAL, "squarehead": 1.0}},
    # weight 1 made the feature term ~3x the KL at the first step and cost perplexity: a tenth of it
    "sparsegpt+permute+reconstruct-model+heal-82k-lr5e-4-squarehead-0.1": {
        **SG_PERMUTE_FIT, "heal": {**SHORT_HEAL, "squarehead": 0.1}},
    # the same short heal at 2x and 4x the learning rate: does a higher rate buy what tokens cannot?
    "sparsegpt+permute+reconstruct-model+heal-82k-lr1e-3": {**SG_PERMUTE_FIT, "heal": {**SHORT_HEAL, "lr": 1e-3}},
    "sparsegpt+permute+reconstruct-model+heal-82k-lr2e-3": {**SG_PERMUTE_FIT, "heal": {**SHORT_HEAL, "lr": 2e-3}},
    # the same 81,920 tokens in 160 steps of one window instead of 40 of four (four times the updates), the rate
    # scaled by the square root of the batch (2.5e-4): are the short heal's tokens better spent in more, noisier steps?
    "sparsegpt+permute+reconstruct-model+heal-82k-lr2.5e-4-b1": {
        **SG_PERMUTE_FIT, "heal": {**SHORT_HEAL, "lr": 2.5e-4, "batch_size": 1}},
    # the same short heal at 50% unstructured (no permutation there), from the 4-epoch fit of the row above
    "sparsegpt+reconstruct-model+heal-82k-lr5e-4": {"method": "sparsegpt", "reconstruct": TO_MODEL,
                                                    "heal": SHORT_HEAL},
}
#: the healing step of the `+heal` rows (`bench/recipes/best-2-4-healed.yaml`): 160 steps of 4 x 512 C4 tokens,
#: distilled from the dense model; sized so that pruning + healing run in well under 2 hours on this machine
HEAL = {"tokens": 327_680, "seqlen": 512, "batch_size": 4, "lr": 2e-4, "warmup": 0.05}
PATTERNS = ("2:4", "4:8", "50%")
#: a second step that quantizes the kept weights (GPTQ int4 g128) after pruning (and reconstruction)
INT4 = {"quantize": {"format": "int4", "group_size": 128, "method": "gptq"}}


def recipe_for(pattern: str, row: str, int4: bool = False) -> list[dict]:
    """The recipe of one study cell; permutation rows do not apply to unstructured sparsity."""
    opts = dict(ROWS[row])
    for key in CALIB_KEYS:
        opts.pop(key, None)
    extra = opts.pop("heal", False)  # True: HEAL; a dict: HEAL with these options changed
    heal = [{"heal": {**HEAL, **(extra if isinstance(extra, dict) else {})}}] if extra else []
    prune = {**opts, "sparsity": 0.5} if pattern == "50%" else {**opts, "pattern": pattern}
    return [{"prune": prune}] + heal + ([INT4] if int4 else [])


def applies(pattern: str, row: str) -> bool:
    """Permutation only serves N:M groups; a sparsity allocation only unstructured sparsity (N:M fixes it)."""
    if pattern == "50%":
        return not ROWS[row].get("permute")
    return "allocation" not in ROWS[row]


def result_path(out: Path, pattern: str, row: str, seed: int, int4: bool) -> Path:
    tag = pattern.replace(":", "-").replace("%", "pct")
    return out / f"{tag}_{row}{'+int4' if int4 else ''}_seed{seed}.json"


def base_row(row: str, int4: bool) -> tuple[str, bool] | None:
    """The cell whose recipe this cell's recipe extends by its last step: the same row without int4, or for a
    healing row, the row with the same prune options and no heal (None where there is none)."""
    if int4:
        return row, False
    opts = dict(ROWS[row])
    if not opts.pop("heal", False):
        return None
    return next(((name, False) for name, o in ROWS.items() if o == opts), None)


def saved_base(args: argparse.Namespace, pattern: str, row: str, seed: int, int4: bool) -> tuple[Path, dict] | None:
    """The checkpoint (under --save-dir) and result (under --out) of `base_row`'s cell, when both exist and the
    checkpoint was made by that result's recipe and calibration: the cell continues from it
    (`--continue-saved`), running only its last step on that checkpoint."""
    from sparsekit.checkpoint import read_metadata

    base = base_row(row, int4)
    if args.save_dir is None or base is None:
        return None
    folder = args.save_dir / result_path(Path(), pattern, base[0], seed, base[1]).stem
    record = result_path(args.out, pattern, base[0], seed, base[1])
    if not (folder / "sparsekit.json").is_file() or not record.is_file():
        return None
    meta, done = read_metadata(folder), json.loads(record.read_text())
    # the same recipe is not enough: a rerun of the cell (other threads, other timing) rewrites one of the two, and
    # the continued cell adds the record's seconds to what it runs on the checkpoint; the prune step's seconds
    # name the run
    pruned = [st["seconds"] for st in meta.get("steps", []) if st.get("step") == "prune"]
    if (meta["recipe"] != done["recipe"] or meta["calibration"] != done["calibration"]
            or (pruned and pruned[0] != done["prune_seconds"])):
        raise SystemExit(f"nm_study: {folder} was not made by the run that wrote {record}; remove one")
    return folder, done


def last_step(recipe: list[dict], model: str) -> list[dict]:
    """The step a continued cell runs on the saved checkpoint; a heal distils `model` as it was (the dense
    model the whole recipe's heal would have as its teacher), not the pruned checkpoint it starts from."""
    step = dict(recipe[-1])
    if "heal" in step:
        step["heal"] = {"teacher": model, **step["heal"]}
    return [step]


def run_cell(args: argparse.Namespace, pattern: str, row: str, seed: int, int4: bool) -> dict:
    from sparsekit.api import compress, evaluate, save
    from sparsekit.models.loader import load_model
    from sparsekit.recipe import load_recipe
    from sparsekit.steps.records import HealRecord, PruneRecord

    recipe = recipe_for(pattern, row, int4)
    base = saved_base(args, pattern, row, seed, int4) if args.continue_saved else None
    options = dict(seed=seed, nsamples=args.nsamples, seqlen=args.calib_seqlen, data_dir=args.data_dir,
                   progress=not args.quiet, calib_dtype=args.calib_dtype)
    options.update({arg: ROWS[row][key] for key, arg in CALIB_KEYS.items() if key in ROWS[row]})
    start = time.perf_counter()
    if base is None:
        model, tokenizer = load_model(args.model, dtype="float32", device="cpu")
        compressed = compress(model, recipe, tokenizer, **options)
    else:  # the last step on the saved result of every step before it (its masks carried)
        if load_recipe(base[1]["recipe"]).to_list() != load_recipe(recipe[:-1]).to_list():
            raise SystemExit(f"nm_study: {base[0]} holds another recipe than the steps before this cell's last")
        compressed = compress(str(base[0]), last_step(recipe, args.model), **options)
        model, tokenizer = compressed.model, compressed.tokenizer
    seconds = time.perf_counter() - start
    report = evaluate(model, tokenizer, ppl=["wikitext2"], seqlen=args.seqlen, limit=args.limit,
                      data_dir=args.data_dir, progress=not args.quiet)
    if args.save_dir is not None:  # e.g. for zero_shot.py --saved
        save(compressed, args.save_dir / result_path(Path(), pattern, row, seed, int4).stem,
             command="python bench/experiments/nm_study.py " + shlex.join(args.argv))
    common = {"model": args.model, "pattern": pattern, "row": row, "int4": int4, "seed": seed,
              "recipe": load_recipe(recipe).to_list(),  # every option spelled out, defaults included
              "ppl": report["ppl"]["wikitext2"], "sparsity": compressed.sparsity}
    tail = {"protocol": report["protocol"], "device": report["device"], "versions": report.get("versions"),
            "date": report.get("date"), "command": "python bench/experiments/nm_study.py " + shlex.join(args.argv)}
    if base is not None:
        done = base[1]
        if compressed.calibration != done["calibration"]:
            raise SystemExit(f"nm_study: {base[0]} was calibrated as {done['calibration']}, this run as "
                             f"{compressed.calibration}; pass the same --calib-dtype / --nsamples")
        heal = next((st.to_dict() for st in compressed.steps if isinstance(st, HealRecord)), done["heal"])
        kind = "heal" if "heal" in recipe[-1] else "quantize"
        return {**common, "compress_seconds": done["compress_seconds"] + seconds,
                "prune_seconds": done["prune_seconds"], "calibration": done["calibration"], "heal": heal,
                **{key: done[key] for key in ("reconstruction", "permuted_modules")},
                "continued_from": {"checkpoint": base[0].name, f"{kind}_seconds": seconds}, **tail}
    prune = next(st for st in compressed.steps if isinstance(st, PruneRecord))
    heal = next((st for st in compressed.steps if isinstance(st, HealRecord)), None)
    fits = list(prune.reconstruction.values())
    return {**common, "compress_seconds": seconds, "prune_seconds": prune.seconds,
            "calibration": compressed.calibration,
            "reconstruction": {"blocks": len(fits),
                               "mean_error_before": statistics.fmean(f[0] for f in fits) if fits else None,
                               "mean_error_after": statistics.fmean(f[1] for f in fits) if fits else None},
            "heal": None if heal is None else heal.to_dict(), "permuted_modules": len(prune.permuted), **tail}


def _timed_on(record: dict) -> str:
    """The device of a cell, and its calibration forwards when they were not the study's bf16 (a CPU
    without bf16 instructions runs them in fp32: bf16 is emulated there, several times slower)."""
    dtype = record["calibration"].get("forward_dtype")
    return record["device"] + ("" if dtype == "bfloat16" else f", {dtype} calibration forwards")


def table(out: Path) -> str:
    """Per pattern and row: mean ppl over the seeds measured, their spread, seconds and the device they were
    timed on (CPU, threads: the study's rows ran on more than one machine); rows in study order."""
    cells: dict[tuple[str, str, bool], list[dict]] = {}
    for file in sorted(out.glob("*.json")):
        r = json.loads(file.read_text())
        cells.setdefault((r["pattern"], r["row"], r["int4"]), []).append(r)
    lines = ["| pattern | row | seeds | WikiText-2 ppl (mean) | spread (max - min) | prune time (s) | healing | "
             "timed on |", "|---|---|---|---|---|---|---|---|"]
    order = {row: i for i, row in enumerate(ROWS)}
    for (pattern, row, int4), rs in sorted(cells.items(), key=lambda kv: (PATTERNS.index(kv[0][0]), kv[0][2],
                                                                           order[kv[0][1]])):
        ppl = [r["ppl"] for r in rs]
        spread = f"{max(ppl) - min(ppl):.2f}" if len(ppl) > 1 else "-"
        secs = statistics.fmean(r["prune_seconds"] for r in rs)
        heals = [r["heal"] for r in rs if r.get("heal")]
        heal = (f"{statistics.fmean(h['tokens'] for h in heals) / 1e3:,.0f}k tokens, "
                f"{statistics.fmean(h['seconds'] for h in heals) / 60:.0f} min") if heals else "-"
        lines.append(f"| {pattern}{' + int4' if int4 else ''} | {row} | {','.join(str(r['seed']) for r in rs)} | "
                     f"{statistics.fmean(ppl):.2f} | {spread} | {secs:.0f} | {heal} | "
                     f"{'; '.join(dict.fromkeys(_timed_on(r) for r in rs))} |")
    return "\n".join(lines)


#: Llama-2-7B's shapes (hidden, intermediate, blocks, KV heads x head_dim) for the cost table
LLAMA7B = {"hidden": 4096, "intermediate": 11008, "blocks": 32, "kv_dim": 4096, "head_dim": 128}


def flops_table(tokens: int = 128 * 2048, heal_tokens: int = 10_000_000, rate: float = 400e12) -> str:
    """What each technique costs for a 7B model, from its algorithm (multiply-adds x 2), and the time at a
    sustained `rate` FLOP/s (an H100-class GPU in bf16 at ~40% of its dense peak; fp32 parts are slower).
    `tokens`: calibration tokens (the papers' 128 x 2048); `heal_tokens`: a healing budget."""
    h, i, n_blocks, kv, hd = (LLAMA7B[k] for k in ("hidden", "intermediate", "blocks", "kv_dim", "head_dim"))
    shapes = [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]   # q k v o gate up down: [out, in]
    params = sum(o * k for o, k in shapes)                                 # per block
    fwd = 2 * params * tokens                                             # one block forward over the calibration set
    xtx = 2 * tokens * (3 * h * h + i * i)                                 # shared X^T X: qkv, o, gate/up (one each), down
    obs = sum(2 * o * k * k + k ** 3 for o, k in shapes)                  # SparseGPT sweep + inverse per projection
    score = 4 * params                                                    # |W| x norm (RIA: + row / column sums)
    dsnot = 50 * 12 * params                                              # 50 cycles x ~12 ops per weight
    g = i // 4                                                            # groups of down_proj's inputs at 2:4
    permute = 12 * (h * g * g * 2 + g ** 3)                               # 12 rounds: gain matrix + Hungarian
    recon = (4 * 2 + 3) * fwd                                             # 2 epochs of fwd+bwd (3 fwd) + 3 evaluations
    rows = [("calibration forwards (stats + sequential re-forward)", 2 * fwd),
            ("X^T X (shared per input)", xtx), ("Wanda / RIA scores", score), ("SparseGPT (OBS sweep + inverse)", obs),
            ("DSnoT (50 cycles)", dsnot), ("channel permutation (down_proj, 12 rounds)", permute),
            ("block-wise reconstruction (2 epochs)", recon)]
    lines = ["| technique (Llama-2-7B, 128 x 2048 calibration tokens) | TFLOP | time at 400 TFLOP/s (a lower bound) |", "|---|---|---|"]
    for name, per_block in rows:
        total = per_block * n_blocks
        lines.append(f"| {name} | {total / 1e12:,.1f} | {total / rate:,.2f} s |")
    heal = 8 * params * n_blocks * heal_tokens                           # teacher fwd (2P) + student fwd+bwd (6P)
    lines.append(f"| healing, {heal_tokens / 1e6:.0f}M tokens (teacher fwd + student fwd/bwd) | {heal / 1e12:,.0f} | "
                 f"{heal / rate / 60:,.0f} min |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="nm_study.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--patterns", default=",".join(PATTERNS), help=f"comma list of {', '.join(PATTERNS)}".replace("%", "%%"))
    p.add_argument("--rows", default=",".join(ROWS), help="comma list (default: all)")
    p.add_argument("--seeds", default="0", help="calibration seeds, comma list [0]")
    p.add_argument("--int4", action="store_true", help="add GPTQ int4 g128 after pruning")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--limit", type=int, default=40, help="WikiText-2 windows [40: the standard CPU protocol]")
    p.add_argument("--seqlen", type=int, default=2048, help="WikiText-2 window length [2048]")
    p.add_argument("--nsamples", type=int, default=128, help="calibration windows [128]")
    p.add_argument("--calib-seqlen", type=int, default=512, help="calibration window length [512]")
    p.add_argument("--calib-dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--save-dir", type=Path, default=None, help="also save each compressed model as a checkpoint")
    p.add_argument("--force", action="store_true", help="re-run cells that already have a result")
    p.add_argument("--continue-saved", action="store_true",
                   help="with --save-dir: an int4 cell whose cell without int4 was saved (checkpoint and result), "
                        "or a healing row whose row without healing was, runs only its last step on that checkpoint; "
                        "its times add the saved cell's")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--table", action="store_true", help="print the README table of --out and exit")
    p.add_argument("--flops", action="store_true", help="print the cost of each technique for a 7B model and exit")
    args = p.parse_args(argv)
    args.argv = argv
    if args.flops:
        print(flops_table())
        return 0
    if args.table:
        print(table(args.out))
        return 0
    patterns = [x for x in args.patterns.split(",") if x]
    rows = [x for x in args.rows.split(",") if x]
    bad = [x for x in patterns if x not in PATTERNS] + [x for x in rows if x not in ROWS]
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x]
    except ValueError:
        bad.append(args.seeds)
    if bad:
        print(f"nm_study: unknown pattern(s) / row(s) / seeds {bad}; patterns: {', '.join(PATTERNS)}; rows: "
              f"{', '.join(ROWS)}", file=sys.stderr)
        return 2
    from sparsekit.utils.io import write_json_atomic

    for seed in seeds:
        for pattern in patterns:
            for row in rows:
                if not applies(pattern, row):
                    continue
                path = result_path(args.out, pattern, row, seed, args.int4)
                if path.exists() and not args.force:
                    print(f"skip {path.name}: exists", flush=True)
                    continue
                r = run_cell(args, pattern, row, seed, args.int4)
                write_json_atomic(path, r)
                print(f"{pattern:<4} {row:<32} seed {seed}: ppl {r['ppl']:.3f}  prune {r['prune_seconds']:.0f} s",
                      flush=True)
    print(table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
