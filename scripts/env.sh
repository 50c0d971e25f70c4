# Paths shared by the scripts. Override LATENTSYNC_HOME to put the cache elsewhere.
export LATENTSYNC_HOME="${LATENTSYNC_HOME:-$HOME/.cache/comfyui-latentsync}"
export LATENTSYNC_VENV="${LATENTSYNC_VENV:-$LATENTSYNC_HOME/venv}"
export LATENTSYNC_COMFYUI="${LATENTSYNC_COMFYUI:-$LATENTSYNC_HOME/ComfyUI-0.3.75}"
