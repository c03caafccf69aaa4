#!/bin/sh
# transparent-init.sh: redirect the pod's (or VM's) IMDS traffic to ficbroker.
#
# Adds, in the current network namespace:
#   iptables -t nat -A OUTPUT -p tcp -d 169.254.169.254 --dport 80 \
#            -m owner ! --uid-owner 10001 -j REDIRECT --to-ports 8181
# so that every process except ficbroker (uid 10001) that connects to 169.254.169.254:80 reaches
# ficbroker on 127.0.0.1:8181 instead, while ficbroker's own IMDS requests still reach the real IMDS.
# This is for clients with a hard-coded IMDS address (Go azidentity/MSAL Go, the C++ SDK, old Python),
# which ignore AZURE_POD_IDENTITY_AUTHORITY_HOST. ficbroker must run with "transparent": true.
#
# Needs CAP_NET_ADMIN in the network namespace, and nothing else. In Kubernetes it runs as an ordinary
# (run-to-completion) init container, as uid 0, with capabilities drop ALL + add NET_ADMIN; the rule stays
# in the pod's network namespace after the container exits. It must not be used with hostNetwork: true
# (it would redirect the node's IMDS traffic). IPv4 only: IMDS has no IPv6 address.
#
# The app containers must NOT run as FICBROKER_UID: their traffic would bypass the redirect.
#
# Environment (defaults in brackets):
#   FICBROKER_PORT [8181]            port ficbroker listens on (loopback)
#   FICBROKER_UID  [10001]           uid ficbroker runs as; its traffic is not redirected
#   IMDS_ADDRESS   [169.254.169.254] address to intercept
#   IMDS_PORT      [80]              port to intercept
#   IPTABLES       [iptables]        iptables binary (iptables-nft or iptables-legacy)
set -eu

FICBROKER_PORT="${FICBROKER_PORT:-8181}"
FICBROKER_UID="${FICBROKER_UID:-10001}"
IMDS_ADDRESS="${IMDS_ADDRESS:-169.254.169.254}"
IMDS_PORT="${IMDS_PORT:-80}"
IPTABLES="${IPTABLES:-iptables}"

usage() {
    cat <<EOF
Usage: transparent-init.sh [--apply | --delete | --check | --help]

  --apply   add the redirect rule if it is not present (default)
  --delete  remove the redirect rule if it is present
  --check   exit 0 if the rule is present, 1 if not
  --help    show this text

Rule: $IPTABLES -t nat -A OUTPUT -p tcp -d $IMDS_ADDRESS --dport $IMDS_PORT
      -m owner ! --uid-owner $FICBROKER_UID -j REDIRECT --to-ports $FICBROKER_PORT
Settings come from the environment: FICBROKER_PORT, FICBROKER_UID, IMDS_ADDRESS, IMDS_PORT, IPTABLES.
EOF
}

die() {
    echo "transparent-init: $*" >&2
    exit 1
}

is_uint() {
    case "$1" in
        '' | *[!0-9]*) return 1 ;;
        *) return 0 ;;
    esac
}

is_port() {
    is_uint "$1" && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]
}

is_ipv4() {
    printf '%s\n' "$1" | grep -Eq '^([0-9]{1,3}\.){3}[0-9]{1,3}$'
}

mode=apply
if [ "$#" -gt 1 ]; then
    usage >&2
    exit 2
fi
case "${1:-}" in
    '' | --apply) mode=apply ;;
    --delete) mode=delete ;;
    --check) mode=check ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        exit 2
        ;;
esac

is_port "$FICBROKER_PORT" || die "FICBROKER_PORT must be a port number, got '$FICBROKER_PORT'"
is_port "$IMDS_PORT" || die "IMDS_PORT must be a port number, got '$IMDS_PORT'"
is_uint "$FICBROKER_UID" || die "FICBROKER_UID must be a numeric uid, got '$FICBROKER_UID'"
[ "$FICBROKER_UID" -ne 0 ] || die "FICBROKER_UID must not be 0 (root's traffic would bypass the redirect)"
is_ipv4 "$IMDS_ADDRESS" || die "IMDS_ADDRESS must be an IPv4 address, got '$IMDS_ADDRESS'"
command -v "$IPTABLES" >/dev/null 2>&1 || die "'$IPTABLES' not found in PATH"

# The rule, without the -A/-C/-D verb. Word splitting is wanted here: every value was validated above.
rule="OUTPUT -p tcp -d $IMDS_ADDRESS --dport $IMDS_PORT -m owner ! --uid-owner $FICBROKER_UID -j REDIRECT --to-ports $FICBROKER_PORT"

# Fail early, with a useful message, if the nat table cannot be read (no CAP_NET_ADMIN, or an
# iptables-legacy binary that also needs CAP_NET_RAW: use the nf_tables backend).
"$IPTABLES" -w 5 -t nat -S OUTPUT >/dev/null ||
    die "cannot read the nat table with '$IPTABLES' (needs CAP_NET_ADMIN; iptables-legacy also needs CAP_NET_RAW)"

# 0: present, 1: absent; any other status of 'iptables -C' is an error.
have_rule() {
    rc=0
    # shellcheck disable=SC2086
    "$IPTABLES" -w 5 -t nat -C $rule >/dev/null 2>&1 || rc=$?
    case "$rc" in
        0) return 0 ;;
        1) return 1 ;;
        *) die "'$IPTABLES -t nat -C' failed with status $rc" ;;
    esac
}

case "$mode" in
    check)
        if have_rule; then
            echo "transparent-init: rule present"
            exit 0
        fi
        echo "transparent-init: rule absent"
        exit 1
        ;;
    delete)
        while have_rule; do
            # shellcheck disable=SC2086
            "$IPTABLES" -w 5 -t nat -D $rule
        done
        echo "transparent-init: rule removed"
        ;;
    apply)
        if have_rule; then
            echo "transparent-init: rule already present"
        else
            # shellcheck disable=SC2086
            "$IPTABLES" -w 5 -t nat -A $rule || die "could not add the rule (is CAP_NET_ADMIN granted?)"
            have_rule || die "the rule was added but cannot be found"
            echo "transparent-init: redirecting tcp $IMDS_ADDRESS:$IMDS_PORT to port $FICBROKER_PORT for every uid but $FICBROKER_UID"
        fi
        ;;
esac
"$IPTABLES" -w 5 -t nat -S OUTPUT
