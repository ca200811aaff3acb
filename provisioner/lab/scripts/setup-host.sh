#!/bin/sh
# What only a lab needs on its hosts. Shared by the local lab builder
# (`provision lab up`) and the Vagrantfile, so both labs are the same. The
# servers' services (PowerDNS, MariaDB, Apache, PHP-FPM) are not made here:
# both labs configure them as an office's, with `provision host prepare`'s
# playbooks (playbooks/host_prepare.yml).
#
# Phases:
#   packages - install the lab's package list (Vagrant only; the local lab's
#           image already has them).
#   base  - deploy account with the lab's SSH key, sshd settings, /etc/hosts.
#           The local lab runs it in the image before boot; Vagrant runs it first.
#   lab   - the lab's own extras: the ACME server (Pebble) on the acme host,
#           and for Vagrant the web servers' shared public addresses (the
#           local lab puts them on eth0 itself). Idempotent.
#
# Inputs (environment): LAB_PHASE, LAB_ROLE, LAB_HOSTS ("name=address ..."),
# LAB_USER, LAB_AUTHORIZED_KEY (base), LAB_PACKAGES (packages),
# LAB_PUBLIC_ADDRESSES (web, Vagrant only), ACME_PORT, ACME_MANAGEMENT_PORT,
# PEBBLE_TLS_CERT, PEBBLE_TLS_KEY (PEM text, acme only), LAB_PUBLIC_ROUTES
# (acme, Vagrant only: the web servers' public networks, reached on-link).
set -eu
umask 022

address_of() {
    for pair in $LAB_HOSTS; do
        [ "${pair%%=*}" = "$1" ] && { echo "${pair#*=}"; return 0; }
    done
    echo "unknown lab host: $1" >&2
    return 1
}

# Enable and start a service under systemd (Vagrant) or the lab's own init.
enable_service() {
    if [ -d /run/systemd/system ]; then
        systemctl enable --now "$1" >/dev/null
        systemctl restart "$1"
    else
        mkdir -p /etc/lab
        grep -qx "$1" /etc/lab/services 2>/dev/null || echo "$1" >> /etc/lab/services
        service "$1" restart >/dev/null
        service "$1" status >/dev/null || { echo "$1 did not start" >&2; exit 1; }
    fi
}

phase_base() {
    if ! id "$LAB_USER" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/bash "$LAB_USER"
    fi
    home=$(getent passwd "$LAB_USER" | cut -d: -f6)
    install -d -m 0700 -o "$LAB_USER" -g "$LAB_USER" "$home/.ssh"
    printf '%s\n' "$LAB_AUTHORIZED_KEY" > "$home/.ssh/authorized_keys"
    chown "$LAB_USER:$LAB_USER" "$home/.ssh/authorized_keys"
    chmod 0600 "$home/.ssh/authorized_keys"
    echo "$LAB_USER ALL=(ALL) NOPASSWD: ALL" > /etc/sudoers.d/lab-deploy
    chmod 0440 /etc/sudoers.d/lab-deploy

    mkdir -p /etc/ssh/sshd_config.d
    cat > /etc/ssh/sshd_config.d/10-lab.conf <<CONF
# Keys only; the deploy account is the way in.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
HostKey /etc/ssh/ssh_host_ed25519_key
CONF
    [ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key

    # Names of the lab hosts, for logs and for people.
    [ -f /etc/hosts ] || printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
    sed -i '/# lab-hosts$/d' /etc/hosts
    for pair in $LAB_HOSTS; do
        echo "${pair#*=} ${pair%%=*} # lab-hosts" >> /etc/hosts
    done
    if [ -d /run/systemd/system ]; then
        systemctl reload ssh
    fi
}

# The web servers' shared public addresses, for Vagrant; the local lab puts
# them on eth0 itself.
lab_public_addresses() {
    for public in ${LAB_PUBLIC_ADDRESSES:-}; do
        dev=$(ip -o route get "$(address_of db1)" | sed -n 's/.* dev \([^ ]*\).*/\1/p')
        ip addr replace "$public" dev "$dev"
    done
}

lab_acme() {
    : "${PEBBLE_TLS_CERT:?the acme host needs PEBBLE_TLS_CERT}" "${PEBBLE_TLS_KEY:?the acme host needs PEBBLE_TLS_KEY}"
    ns1=$(address_of ns1)
    # Pebble runs under its own account; Debian's package makes none.
    id pebble >/dev/null 2>&1 || useradd --system --home-dir /var/lib/pebble --shell /usr/sbin/nologin pebble
    install -d -o pebble -g pebble -m 0700 /var/lib/pebble
    install -d -m 0755 /etc/pebble
    # Pebble's HTTPS identity, signed by the lab CA. The key arrives in this
    # script's text (never in argv) and only the shell's own printf writes it.
    printf '%s\n' "$PEBBLE_TLS_CERT" > /etc/pebble/tls.crt
    (umask 077 && printf '%s\n' "$PEBBLE_TLS_KEY" > /etc/pebble/tls.key)
    unset PEBBLE_TLS_KEY
    chown pebble:pebble /etc/pebble/tls.key
    chmod 0600 /etc/pebble/tls.key
    # httpPort/tlsPort are where Pebble connects to validate HTTP-01 and TLS-ALPN-01.
    cat > /etc/pebble/pebble-config.json <<CONF
{
  "pebble": {
    "listenAddress": "0.0.0.0:${ACME_PORT:-14000}",
    "managementListenAddress": "0.0.0.0:${ACME_MANAGEMENT_PORT:-15000}",
    "certificate": "/etc/pebble/tls.crt",
    "privateKey": "/etc/pebble/tls.key",
    "httpPort": 80,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
CONF
    # Read by the init script and the systemd unit alike. Validation is real:
    # Pebble resolves names through the lab's primary name server and checks
    # every challenge (never PEBBLE_VA_ALWAYS_VALID); it does not sleep before
    # validating, never rejects a good nonce and never reuses an authorization,
    # so every issuance runs the whole challenge path.
    cat > /etc/default/pebble <<CONF
PEBBLE_DNS_SERVER=$ns1:53
PEBBLE_VA_NOSLEEP=1
PEBBLE_WFE_NONCEREJECT=0
PEBBLE_AUTHZREUSE=0
CONF
    if [ -d /run/systemd/system ]; then
        cat > /etc/systemd/system/pebble.service <<'UNIT'
[Unit]
Description=Pebble ACME test server (lab CA)
Wants=network-online.target
After=network-online.target

[Service]
User=pebble
Group=pebble
EnvironmentFile=/etc/default/pebble
WorkingDirectory=/var/lib/pebble
ExecStart=/usr/bin/pebble -config /etc/pebble/pebble-config.json -dnsserver ${PEBBLE_DNS_SERVER}
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
        systemctl daemon-reload
    fi
    enable_service pebble
    # HTTP-01 reaches the web servers' public addresses. The local lab routes
    # them on eth0 itself; Vagrant routes them on the lab network's interface.
    for net in ${LAB_PUBLIC_ROUTES:-}; do
        dev=$(ip -o route get "$ns1" | sed -n 's/.* dev \([^ ]*\).*/\1/p')
        ip route replace "$net" dev "$dev"
    done
}

case "$LAB_PHASE" in
    packages)
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086 # a list of package names
        apt-get install -y -qq --no-install-recommends $LAB_PACKAGES
        ;;
    base) phase_base ;;
    lab)
        case "$LAB_ROLE" in
            acme) lab_acme ;;
            web) lab_public_addresses ;;
            ns-primary|ns-secondary|db|backup) : ;;
            *) echo "unknown role: $LAB_ROLE" >&2; exit 2 ;;
        esac
        ;;
    *) echo "unknown phase: $LAB_PHASE" >&2; exit 2 ;;
esac
