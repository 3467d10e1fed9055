#!/bin/sh
# Prints the path of the fixed English text that perplexity figures for the
# example model are measured on: the GNU GPL version 3, which Debian's
# base-files package installs on every Debian/Ubuntu system (about 5,600
# words, 7,639 SmolLM2 tokens: 29 windows at --ctx 256). Reinstalls
# base-files quietly if the file is missing; prints nothing else on success.
#
#   q35-rt perplexity model.q35 --text "$(examples/smollm2/eval-text.sh)" --ctx 256
set -eu
text=/usr/share/common-licenses/GPL-3
if [ ! -f "$text" ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq >/dev/null 2>&1 || true
    $sudo apt-get install -qq -y --reinstall base-files >/dev/null 2>&1
fi
[ -f "$text" ] || { echo "eval-text.sh: $text not found" >&2; exit 1; }
echo "$text"
