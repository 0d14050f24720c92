#!/usr/bin/env bash
# with-ca.sh COMMAND...: run COMMAND trusting an extra CA bundle, when one is given.
#
# The bundle (a network that re-signs TLS, as corporate proxies do) is never stored in the image:
# at build time BuildKit mounts it as the secret `ca_bundle` (/run/secrets/ca_bundle) only while
# a RUN step lasts; at run time TALKFLOW_CA_BUNDLE names a file mounted read-only into the container.
# Without either, COMMAND runs unchanged. docker/entrypoint.sh sources this file for the same
# exports.
ca=${TALKFLOW_CA_BUNDLE:-/run/secrets/ca_bundle}
if [[ -s $ca ]]; then
  export SSL_CERT_FILE=$ca REQUESTS_CA_BUNDLE=$ca CURL_CA_BUNDLE=$ca PIP_CERT=$ca AWS_CA_BUNDLE=$ca \
         PREFECT_API_SSL_CERT_FILE=$ca
elif [[ -n ${TALKFLOW_CA_BUNDLE:-} ]]; then
  echo "with-ca: TALKFLOW_CA_BUNDLE=$TALKFLOW_CA_BUNDLE is not a readable file; mount it into the container" >&2
  exit 2
fi
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then exec "$@"; fi
