# Turns vagrant/topology.json into bash assignments for test/lab/lab.sh:
#
#   eval "$(jq -r --arg vips "$vips" --arg vips6 "$vips6" -f test/lab/topology.jq vagrant/topology.json)"
#
# --arg vips A,B,C     the IPv4 VIPs the backends hold (empty: the topology's "vips")
# --arg vips6 A,B,C    the IPv6 VIPs the backends hold (empty: the topology's "vips6";
#                      "none": no IPv6 VIP)
# --arg fleet 1|0      1: the hosts marked "fleet" too, and BGP on the balancers
#                      and the router (topology "fleet"); 0: neither
#
# Defines (every value quoted with @sh):
#   TOPO_NS=(client lb ...)                 namespace suffixes, in topology order
#                                           (without the fleet's unless --arg fleet 1)
#   TOPO_NAME[ns] TOPO_ROLE[ns]             host name (the Vagrant machine) and role
#   TOPO_GATEWAY[ns]                        the host's default gateways (lab only):
#                                           "gateway", then "gateway6", space-separated
#   TOPO_BRIDGES=(br0 br1)                  one bridge per segment
#   TOPO_LINKS=("ns ifname port bridge"...) one veth per host interface: ifname in
#                                           the host (eth0, eth1, ...), port on the switch
#   TOPO_ARGS_<ns>=(...)                    the role script's arguments that come
#                                           from the topology; lab.sh appends the
#                                           lab-only ones (--gateway, --mtu, ...)
#   TOPO_VIPS  TOPO_VIPS6  TOPO_MTU_CLIENT  TOPO_MTU_INTERIOR
#
# The Vagrantfile derives the same arguments (with `--interface auto`); keep
# both derivations in step (test/vagrant.test.ts compares them).

# ip2n: "10.1.2.3" -> 167838211; null unless four decimal numbers (a bad VIP
# then reaches the role scripts, which reject it with a clear message).
def ip2n:
  split(".") | if length == 4 and all(test("^[0-9]{1,3}$")) then map(tonumber) | .[0] * 16777216 + .[1] * 65536 + .[2] * 256 + .[3] else null end;
def hex2n: ascii_downcase | explode | reduce .[] as $c (0; . * 16 + (if $c >= 97 then $c - 87 else $c - 48 end));
# ip6groups: "fd00:10::1" -> [64768, 16, 0, 0, 0, 0, 0, 1]; null unless an
# IPv6 address of hexadecimal groups.
def ip6groups:
  def groups: if . == "" then [] else split(":") end;
  if test("^[0-9A-Fa-f:]+$") | not then null
  elif test("::") then
    (split("::") | if length != 2 then null else (.[0] | groups) as $l | (.[1] | groups) as $r | $l + [range(8 - ($l | length) - ($r | length)) | "0"] + $r end)
  else split(":") end
  | if . != null and length == 8 and all(test("^[0-9A-Fa-f]{1,4}$")) then map(hex2n) else null end;
def prefixlen: split("/")[1] | tonumber;
# fleet_args($t; $host): a fleet's BGP arguments (BIRD on every balancer and the
# router; docs/fleet.md): a balancer peers with the router's addresses on its
# segment, the router with any node on the balancers' segments.
def fleet_args($t; $host):
  ($t.hosts[] | select(.role == "router")) as $router
  | if $host.role == "balancer" then
      ($router.interfaces[] | select(.segment == $host.interfaces[0].segment)) as $gw
      | ["--bgp-as", ($t.fleet.node_as | tostring), "--bgp-peer", $gw.address]
        + (if $gw.address6 then ["--bgp-peer", $gw.address6] else [] end)
        + ["--bgp-peer-as", ($t.fleet.router_as | tostring),
           "--announce-table", ($t.fleet.announce_table | tostring), "--announce-proto", ($t.fleet.announce_proto | tostring)]
    elif $host.role == "router" then
      ["--bgp-as", ($t.fleet.router_as | tostring)]
      + ([$t.hosts[] | select(.role == "balancer") | .interfaces[0].segment] | unique
         | map($t.segments[.] | "--bgp-nodes", .subnet, (if .subnet6 then "--bgp-nodes", .subnet6 else empty end)))
      + ["--bgp-peer-as", ($t.fleet.node_as | tostring)]
    else [] end;
# inside("10.100.0.0/24"), inside("fd00:100::/64"): the input address lies in
# the prefix (false for an address of the other family).
def inside($cidr):
  ($cidr | split("/")) as [$net, $len]
  | ($len | tonumber) as $bits
  | if ($net | test(":")) then
      ip6groups as $a | ($net | ip6groups) as $n
      | $a != null and $n != null
        and all(range(8) as $i | ([([$bits - 16 * $i, 16] | min), 0] | max) as $b
              | (pow(2; 16 - $b)) as $size | (($a[$i] / $size) | floor) == (($n[$i] / $size) | floor); .)
    else
      (pow(2; 32 - $bits)) as $size
      | ip2n as $n
      | $n != null and (($n / $size) | floor) == ((($net | ip2n) / $size) | floor)
    end;

. as $t
| ($fleet == "1") as $in_fleet
| ($t.hosts | map(select(.fleet != true or $in_fleet))) as $hosts
| (if $vips == "" then $t.vips else ($vips | split(",")) end) as $vips_list
| (if $vips6 == "" then ($t.vips6 // []) elif $vips6 == "none" then [] else ($vips6 | split(",")) end) as $vips6_list
| [$t.segments | to_entries[] | {key, value: .value.bridge}] | from_entries as $bridge_of
| ($hosts | map(select(.namespace | test("^[a-z][a-z0-9]*$") | not) | .namespace)) as $bad
| if ($bad | length) > 0 then error("topology: bad namespace suffixes: \($bad)") else . end
| (
    "TOPO_NS=(\($hosts | map(.namespace) | @sh))",
    "declare -gA TOPO_NAME=(\($hosts | map("[\(.namespace)]=\(.name | @sh)") | join(" ")))",
    "declare -gA TOPO_ROLE=(\($hosts | map("[\(.namespace)]=\(.role | @sh)") | join(" ")))",
    "declare -gA TOPO_GATEWAY=(\($hosts | map(select(.gateway or .gateway6) | "[\(.namespace)]=\([.gateway, .gateway6 | values] | join(" ") | @sh)") | join(" ")))",
    "TOPO_BRIDGES=(\([$t.segments[].bridge] | @sh))",
    "TOPO_LINKS=(\([$hosts[] | . as $h | .interfaces | to_entries[]
        | "\($h.namespace) eth\(.key) \(if ($h.interfaces | length) == 1 then $h.namespace else "\($h.namespace)\(.key)" end) \($bridge_of[.value.segment])"]
        | @sh))",
    "TOPO_VIPS=\($vips_list | join(",") | @sh)",
    "TOPO_VIPS6=\($vips6_list | join(",") | @sh)",
    "TOPO_MTU_CLIENT=\($t.mtu.lab.client | tostring | @sh)",
    "TOPO_MTU_INTERIOR=\($t.mtu.lab.interior | tostring | @sh)",
    ($hosts[] | . as $h
      | ([.routes[] | select(.to == $t.vip_subnet) | .via] | first) as $vip_via
      | ([.routes[] | select($t.vip_subnet6 and .to == $t.vip_subnet6) | .via] | first) as $vip_via6
      | (if .role == "backend" then ["--name", .name] else [] end)
        + [.interfaces | to_entries[]
            | "--interface", "eth\(.key)",
              "--address", "\(.value.address)/\($t.segments[.value.segment].subnet | prefixlen)",
              (if .value.address6 then "--address", "\(.value.address6)/\($t.segments[.value.segment].subnet6 | prefixlen)" else empty end)]
        + [.routes[] | "--route", "\(.to)=\(.via)"]
        + (if $vip_via then [$vips_list[] | select(inside($t.vip_subnet) | not) | "--route", "\(.)/32=\($vip_via)"] else [] end)
        + (if $vip_via6 then [$vips6_list[] | select(inside($t.vip_subnet6) | not) | "--route", "\(.)/128=\($vip_via6)"] else [] end)
        + (if .role == "backend" then ["--vips", ($vips_list + $vips6_list | join(","))] else [] end)
        + (if $in_fleet then fleet_args($t; $h) else [] end)
      | "TOPO_ARGS_\($h.namespace)=(\(@sh))")
  )
