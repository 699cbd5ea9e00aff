"""What the CLI tests share (pytest puts tests/ on sys.path for its top-level test modules)."""


def assert_user_error(result, *texts):
    """A user error: exit code 2, one `normlab: error:` line on stderr naming `texts`, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    err = result.stderr.strip()
    assert err.startswith("normlab: error:") and len(err.splitlines()) == 1, err
    for text in texts:
        assert text in err, err
