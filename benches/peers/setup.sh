#!/usr/bin/env bash
# The venv of the Kafka-consuming peers of benches/kafka_peers.rs (Quix Streams, Bytewax, Pathway),
# from PyPI at pinned versions, outside the clone; nothing when it is already there.
#   benches/peers/setup.sh        (then: cargo bench --bench kafka_peers)
set -euo pipefail
venv="${TESSERA_PEERS_VENV:-$HOME/.cache/tessera/venv-peers}"
if ! "$venv/bin/python" -c "import quixstreams, bytewax, pathway" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check quixstreams==3.28.1 bytewax==0.21.1 pathway==0.33.0
fi
echo "peers: $venv/bin/python ($("$venv/bin/python" -c 'import quixstreams, bytewax, pathway; print("quixstreams", quixstreams.__version__, "bytewax", bytewax.__version__, "pathway", pathway.__version__)' 2>/dev/null))"
