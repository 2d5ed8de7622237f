"""Many runs at once: grids of config overrides (`grid`) and the engines that execute them (`engines`)."""
