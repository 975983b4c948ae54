# Source after bench/gpu_setup.sh on the GPU machine: the pinned stack from .site/ and qalign from the checkout.
export PYTHONPATH=$PWD/.site:$PWD
export QALIGN="python3 -m qalign.cli"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DISABLE_VERSION_CHECK=1 PYTHONUNBUFFERED=1
