import sys

from fhir_adapter.cli import main

sys.exit(main())
