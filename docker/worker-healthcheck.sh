#!/bin/sh
# The AI worker's health check: healthy while the node it leases from is ready (the node's
# /readyz). From another container that needs the node's metrics token (or an admin
# credential): PACS_METRICS_TOKEN, read by this script only.
set -eu
node="${PACS_AI_NODE:?PACS_AI_NODE is not set}"
if [ -n "${PACS_METRICS_TOKEN:-}" ]; then
    exec curl -fsS -o /dev/null -H "Authorization: Bearer ${PACS_METRICS_TOKEN}" "${node%/}/readyz"
fi
exec curl -fsS -o /dev/null "${node%/}/readyz"
