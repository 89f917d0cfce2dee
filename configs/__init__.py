"""The built-in YAML configs, installed as ``brainjepa_platform.configs`` (see brainjepa_platform.config_files)."""
