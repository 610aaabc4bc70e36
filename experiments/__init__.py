"""ESC-50 experiments: data, augmentation, model presets and the command-line tools."""
