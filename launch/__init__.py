"""Launchers: local.sh (one machine), tpu.py (Cloud TPU VMs and pod slices), colab.ipynb."""
