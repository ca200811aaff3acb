#!/bin/sh
# Configures one lab host for its role. Shared by the local lab builder
# (`provision lab up`) and the Vagrantfile, so both labs are the same.
#
# Phases:
#   packages - install the lab's package list (Vagrant only; the local lab's
#           image already has them).
#   base  - deploy account with the lab's SSH key, sshd settings, /etc/hosts.
#           The local lab runs it in the image before boot; Vagrant runs it first.
#   role  - the role's services (PowerDNS primary/secondary, Apache+PHP-FPM,
#           MariaDB, the Pebble ACME server), configured and started. Idempotent.
#   lab   - only what the lab needs beyond `provision host prepare` (which
#           configures PowerDNS, MariaDB, Apache and PHP-FPM with the same
#           playbooks as production): the ACME server, and for Vagrant the web
#           servers' public addresses. Used instead of `role` when
#           PROVISIONER_LAB_HOST_PREPARE=1 (see provisioner/lab/lifecycle.py).
#
# Inputs (environment): LAB_PHASE, LAB_ROLE, LAB_HOSTS ("name=address ..."),
# LAB_NETWORK (CIDR), LAB_ZONES ("zone ..."), LAB_USER, LAB_AUTHORIZED_KEY,
# LAB_PACKAGES (packages phase), PDNS_API_KEY (ns-primary only), PDNS_API_PORT, LAB_PUBLIC_ADDRESSES (web),
# ACME_PORT, ACME_MANAGEMENT_PORT, PEBBLE_TLS_CERT, PEBBLE_TLS_KEY (PEM text, acme only),
# LAB_PUBLIC_ROUTES (acme, Vagrant only: the web servers' public networks, reached on-link).
set -eu
umask 022

log() { echo "[$(hostname)] $*"; }

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

pdns_common_conf() {
    cat <<CONF
launch=gsqlite3
gsqlite3-database=/var/lib/powerdns/pdns.sqlite3
local-address=0.0.0.0
local-port=53
setuid=pdns
setgid=pdns
CONF
}

# The lab's PowerDNS settings: the common ones, then the role's (on stdin).
write_pdns_conf() {
    rm -f /etc/powerdns/pdns.d/bind.conf
    {
        pdns_common_conf
        cat
    } > /etc/powerdns/pdns.d/lab.conf
    chown root:pdns /etc/powerdns/pdns.d/lab.conf
    chmod 0640 /etc/powerdns/pdns.d/lab.conf
    pdns_database
}

pdns_database() {
    db=/var/lib/powerdns/pdns.sqlite3
    if [ ! -s "$db" ]; then
        sqlite3 "$db" < /usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql
    fi
    chown pdns:pdns "$db" /var/lib/powerdns
    chmod 0640 "$db"
}

role_ns_primary() {
    ns1=$(address_of ns1)
    ns2=$(address_of ns2)
    write_pdns_conf <<CONF
primary=yes
allow-axfr-ips=$ns2/32,127.0.0.0/8
also-notify=$ns2
api=yes
api-key=$PDNS_API_KEY
webserver=yes
webserver-address=0.0.0.0
webserver-port=$PDNS_API_PORT
webserver-allow-from=$LAB_NETWORK,127.0.0.0/8
default-soa-content=ns1.@ hostmaster.@ 0 10800 3600 604800 3600
CONF
    for zone in $LAB_ZONES; do
        if ! pdnsutil list-all-zones 2>/dev/null | grep -qx "$zone"; then
            pdnsutil create-zone "$zone" "ns1.$zone" >/dev/null
            pdnsutil add-record "$zone" @ NS "ns2.$zone." >/dev/null
            pdnsutil add-record "$zone" ns1 A "$ns1" >/dev/null
            pdnsutil add-record "$zone" ns2 A "$ns2" >/dev/null
            pdnsutil set-kind "$zone" master >/dev/null
            # Every API change bumps the serial, so ns2 picks it up.
            pdnsutil set-meta "$zone" SOA-EDIT-API INCREASE >/dev/null
            log "zone $zone created"
        fi
    done
    chown pdns:pdns /var/lib/powerdns/pdns.sqlite3
    enable_service pdns
}

role_ns_secondary() {
    ns1=$(address_of ns1)
    write_pdns_conf <<CONF
secondary=yes
allow-notify-from=$ns1/32
xfr-cycle-interval=10
CONF
    for zone in $LAB_ZONES; do
        if ! pdnsutil list-all-zones 2>/dev/null | grep -qx "$zone"; then
            pdnsutil create-slave-zone "$zone" "$ns1" >/dev/null
            log "secondary zone $zone from $ns1"
        fi
    done
    chown pdns:pdns /var/lib/powerdns/pdns.sqlite3
    enable_service pdns
    # Ask for the zones now rather than at the next refresh cycle.
    for zone in $LAB_ZONES; do
        tries=0
        until pdns_control --socket-dir=/run/pdns retrieve "$zone" >/dev/null 2>&1; do
            tries=$((tries + 1))
            [ "$tries" -ge 50 ] && break
            sleep 0.2
        done
    done
}

role_web() {
    # A global ServerName keeps configtest free of warnings: the toolkit
    # treats any configtest warning as a failure.
    echo "ServerName $(hostname)" > /etc/apache2/conf-available/lab-servername.conf
    a2enconf -q lab-servername
    a2enmod -q proxy_fcgi setenvif ssl headers rewrite ratelimit >/dev/null
    a2enconf -q php8.2-fpm
    # systemd makes this runtime directory; the lab's plain init does not.
    install -d -o www-data -g www-data -m 0755 /run/php
    apache2ctl configtest
    enable_service php8.2-fpm
    enable_service apache2
    lab_public_addresses
}

# Public addresses for Vagrant; the local lab puts them on eth0 itself.
lab_public_addresses() {
    for public in ${LAB_PUBLIC_ADDRESSES:-}; do
        dev=$(ip -o route get "$(address_of db1)" | sed -n 's/.* dev \([^ ]*\).*/\1/p')
        ip addr replace "$public" dev "$dev"
    done
}

role_db() {
    cat > /etc/mysql/mariadb.conf.d/60-lab.cnf <<CONF
[mysqld]
# Web hosts connect over the lab network.
bind-address = 0.0.0.0
log_error = /var/log/mysql/error.log
CONF
    install -d -o mysql -g adm -m 2750 /var/log/mysql
    enable_service mariadb
}

role_acme() {
    : "${PEBBLE_TLS_CERT:?the acme role needs PEBBLE_TLS_CERT}" "${PEBBLE_TLS_KEY:?the acme role needs PEBBLE_TLS_KEY}"
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
    role)
        case "$LAB_ROLE" in
            ns-primary) role_ns_primary ;;
            ns-secondary) role_ns_secondary ;;
            web) role_web ;;
            db) role_db ;;
            acme) role_acme ;;
            *) echo "unknown role: $LAB_ROLE" >&2; exit 2 ;;
        esac
        ;;
    lab)
        case "$LAB_ROLE" in
            acme) role_acme ;;
            web) lab_public_addresses ;;
            ns-primary|ns-secondary|db) : ;;
            *) echo "unknown role: $LAB_ROLE" >&2; exit 2 ;;
        esac
        ;;
    *) echo "unknown phase: $LAB_PHASE" >&2; exit 2 ;;
esac
