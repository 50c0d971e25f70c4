"""Set-up, demo and test-support scripts. `model_files` and `vae_files` (the random-weight model writers) are
imported as `scripts.model_files` / `scripts.vae_files` by the tests and the benchmarks; `comfyui.py`,
`demo.py` and the shell scripts run as files."""
