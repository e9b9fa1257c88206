import pytest

from .workers import Worker, purge_test_broker


@pytest.fixture
def celery_worker_process(transactional_db):
    """One real worker process on the test database; killed at teardown."""
    purge_test_broker()
    worker = Worker().start()
    yield worker
    worker.kill()
