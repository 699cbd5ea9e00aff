"""User errors share one base the CLI turns into exit code 2."""

from normlab.experiments.errors import ConfigError, ExecutorError, StoreError, UserError


def test_every_user_error_is_a_user_error():
    for cls in (ConfigError, StoreError, ExecutorError):
        assert issubclass(cls, UserError)
    assert issubclass(ConfigError, ValueError)  # callers that catch ValueError still do
    assert not issubclass(StoreError, ValueError)  # only config mistakes are value errors
