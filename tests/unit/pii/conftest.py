"""The real analyzer for the PII unit tests: Presidio with pattern recognizers only, one pool process."""

from collections.abc import Iterator

import pytest

from gateway.pii.engine import PiiEngine


@pytest.fixture(scope="session")
def engine() -> Iterator[PiiEngine]:
    engine = PiiEngine(None, 1, 20.0)
    try:
        yield engine
    finally:
        engine.close()
