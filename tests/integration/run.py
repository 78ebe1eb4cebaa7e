"""Runs every integration test module (tests/integration/test_*.py); exit 1 on any failure.
Usage: run.py [module-or-test-name ...]"""

import os
import sys
import time
import unittest

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)


def main():
    if os.geteuid() != 0:
        print("integration tests need root (real uids, cgroups and namespaces)", file=sys.stderr)
        return 1
    loader = unittest.TestLoader()
    if len(sys.argv) > 1:
        suite = loader.loadTestsFromNames(sys.argv[1:])
    else:
        suite = loader.discover(here, pattern="test_*.py", top_level_dir=here)
    start = time.time()
    result = unittest.TextTestRunner(verbosity=1 if os.environ.get("CI") else 2).run(suite)
    print(f"integration: {result.testsRun} tests in {time.time() - start:.1f}s "
          f"(build: {os.environ.get('BROKER_BUILD', 'build')})")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
