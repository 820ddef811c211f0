"""GPU check: one prepared run (<= 8 min on one GPU) of what only a GPU machine can show.

Runs, each as its own process with a time limit, and collects every result into one JSON:

1. ``facts``     torch / CUDA versions, device name, bf16 support, memory;
2. ``train``     ``bench_train.py --quick``: training images/s of classifier and seg net through
                 ``engine.train.fit`` (AMP and the pinned prefetch on CUDA);
3. ``crf``       ``bench_crf.py --quick --only speed photos toy``: the torch lattice CRF on the
                 device vs pydensecrf on CPU (throughput ratio, target >= 10x on CUDA; agreement);
4. ``masks``     ``bench_masks.py --quick``: mask extraction vs a plain forward (SmallVGG / VGG-16 at 321 px);
5. ``torchrun``  a 1-process ``torchrun`` smoke: ``wsss train-classifier --quick`` under torchrun
                 (NCCL on CUDA, gloo on CPU), checking it exits 0 and writes its metrics;
6. ``stream``    ``bench_stream.py --quick``: the streamed real-data path (variable-size VOC-like
                 images read by DataLoader workers, random scale + 321 px crops, pinned batches,
                 AMP) vs the same training in memory (images/s and their ratio); on CUDA also
                 (``--reproduce``) ``wsss reproduce paper1 --quick`` and ``wsss reproduce paper2
                 --quick`` end to end on fixture trees with VGG-16 (random init). On CPU: SmallVGG,
                 throughput only. Its time limit is twice ``--step-timeout``.

Every step's limit is also capped by what is left of ``--budget`` (470 s), so the whole run stays
inside 8 minutes; steps past the budget are recorded as skipped.

    python benchmarks/gpu_check.py --out runs/gpu_check            # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --only facts crf   # a CPU dry run of the script

Writes ``<out>/gpu_check.json`` (``{step: {"rc", "seconds", "result" | "tail"}}``) after every
step, so a run cut short keeps what it measured. Exits 0 (a benchmark, not a test).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, start

STEPS = ("facts", "train", "crf", "masks", "torchrun", "stream")


def _configure(p) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cpu")
    p.add_argument("--only", nargs="+", choices=STEPS, default=None, help="run only these steps")
    p.add_argument("--out", default=str(REPO / "runs" / "gpu_check"), help="output folder")
    p.add_argument("--step-timeout", type=int, default=150, help="seconds per step (default 150)")
    p.add_argument("--budget", type=int, default=470,
                   help="seconds for the whole run (default 470, inside 8 min): a step gets at most what is left, "
                        "and steps that would get under 20 s are skipped and recorded as such")


def facts(device: str) -> dict:
    import torch

    out = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "device": device,
           "cuda": torch.version.cuda, "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                   bf16=torch.cuda.is_bf16_supported(), capability=list(torch.cuda.get_device_capability(0)),
                   nccl=torch.distributed.is_nccl_available())
    return out


def _run(cmd: list[str], timeout: int, env: dict | None = None) -> tuple[int, float, str]:
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
        rc, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, text = 124, (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else str(exc.stdout or "")
    return rc, round(time.time() - t0, 1), text[-3000:]


def main(argv=None) -> int:
    args = start(__doc__, argv, _configure)
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict] = {}
    py = sys.executable
    bench = REPO / "benchmarks"
    commands = {
        "train": [py, str(bench / "bench_train.py"), "--quick", "--device", device, "--json", str(out / "train.json")],
        "crf": [py, str(bench / "bench_crf.py"), "--quick", "--device", device, "--only", "speed", "photos", "toy",
                "--json", str(out / "crf.json")],
        "masks": [py, str(bench / "bench_masks.py"), "--quick", "--json", str(out / "masks.json")],
        "stream": [py, str(bench / "bench_stream.py"), "--quick", "--device", device, "--json", str(out / "stream.json")]
        + (["--reproduce"] if device.startswith("cuda") else []),  # VGG-16 reproduce runs: minutes on a GPU only
    }
    torchrun = shutil.which("torchrun") or str(Path(py).with_name("torchrun"))
    commands["torchrun"] = [torchrun, "--standalone", "--nproc_per_node", "1", "-m", "wsss_lib", "train-classifier",
                            "--quick", "--device", device, "--out", str(out / "torchrun"), "--no-progress"]
    t_start = time.time()
    for step in args.only or STEPS:
        left = int(args.budget - (time.time() - t_start))
        if step != "facts" and left < 20:
            report[step] = {"rc": None, "seconds": 0.0, "skipped": f"the {args.budget} s budget was spent"}
            print(f"[gpu_check] {step}: skipped (budget spent)", flush=True)
            (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
            continue
        print(f"[gpu_check] {step} ...", flush=True)
        if step == "facts":
            report[step] = {"rc": 0, "seconds": 0.0, "result": facts(device)}
        else:
            rc, secs, tail = _run(commands[step], min(left, args.step_timeout * (2 if step == "stream" else 1)))
            entry = {"rc": rc, "seconds": secs, "cmd": " ".join(commands[step])}
            js = out / f"{step}.json"
            if rc == 0 and js.is_file():
                entry["result"] = json.loads(js.read_text())
            elif rc == 0 and step == "torchrun":
                entry["result"] = sorted(p.name for p in (out / "torchrun").rglob("*.json"))
            else:
                entry["tail"] = tail
            report[step] = entry
        print(f"[gpu_check] {step}: rc {report[step]['rc']} in {report[step]['seconds']} s", flush=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"[gpu_check] wrote {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
