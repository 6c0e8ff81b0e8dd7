"""The float32 machinery behind Net: planning, compiled programs, threads, budgets."""
