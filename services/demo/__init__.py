"""Demo data for the Deal Registry: a scenario drawn from the Japan–India EV and battery article,
and a client that submits it to a running registry."""
