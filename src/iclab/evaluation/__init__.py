"""Evaluation: error curves of any estimator on fixed seeded prompts (`curves`), sweeps of a test-task parameter
(`sweeps`), and the Markdown reports and plots of a run (`report`)."""
