"""What each `normlab` command does, one module per command or group of commands.

`normlab.cli` declares the commands, their options and help, and calls the function here
that runs them; a module here imports what its command needs at its top. The CLI imports
these modules when a command runs (`normlab.cli._command`), so `normlab --help` and `normlab
ls` load no torch.
"""
