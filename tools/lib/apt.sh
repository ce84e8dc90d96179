#!/usr/bin/env bash
# Shared by tools/setup.d/*.sh: install Debian packages for the commands that are missing, quietly.
#   source tools/lib/apt.sh
#   apt_install_missing "<what they are for>" command:package [command:package ...]
apt_install_missing() {
    local purpose="$1"; shift
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    echo "[setup] installing ${missing[*]} (apt-get) for $purpose"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
