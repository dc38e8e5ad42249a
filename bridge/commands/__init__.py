"""The commands a person types: the ``aiedit`` console script, ``aiedit doctor`` and the offline demo (the only
place the bridge imports the toy world)."""
