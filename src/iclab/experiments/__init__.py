"""Many runs at once: grid files (`gridfile`), planned and run (`grid`) on engines (`engines`), tabulated
(`results`)."""
