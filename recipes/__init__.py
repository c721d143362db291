"""The built-in recipes (`dsgan train idphoto`, `dsgan train learn`): installed as the package data
``dsgan_cli.recipes`` (pyproject.toml maps that package onto this folder), so this folder is their one copy."""
