package node

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/nft"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

func TestNodePortsOf(t *testing.T) {
	cip := netip.MustParseAddr("10.96.0.10")
	b := func(ip string, port uint16, local, ready, serving, terminating bool) vswitch.ServiceBackend {
		return vswitch.ServiceBackend{Addr: netip.MustParseAddr(ip), Port: port, Local: local, Ready: ready, Serving: serving, Terminating: terminating}
	}
	specs := []vswitch.ServiceSpec{
		{Name: "default/plain:http", ClusterIP: cip, Port: 80, Proto: packet.IPProtoTCP}, // no node port
		{Name: "default/web:http", ClusterIP: cip, Port: 80, Proto: packet.IPProtoTCP, NodePort: 30080},
		{Name: "default/dns:udp", ClusterIP: cip, Port: 53, Proto: packet.IPProtoUDP, NodePort: 30080}, // same number, UDP
		{Name: "default/local:http", ClusterIP: cip, Port: 81, Proto: packet.IPProtoTCP, NodePort: 30081, ExternalLocal: true,
			Backends: []vswitch.ServiceBackend{b("10.244.0.3", 8080, true, true, true, false), b("10.244.1.3", 8080, false, true, true, false), b("10.244.0.4", 8080, true, false, true, true)}},
		{Name: "default/draining:http", ClusterIP: cip, Port: 82, Proto: packet.IPProtoTCP, NodePort: 30082, ExternalLocal: true,
			Backends: []vswitch.ServiceBackend{b("10.244.0.4", 8080, true, false, true, true), b("10.244.0.5", 8080, true, false, false, false)}},
		{Name: "default/late:http", ClusterIP: cip, Port: 83, Proto: packet.IPProtoTCP, NodePort: 30080}, // taken
	}
	nps, problems := nodePortsOf(specs)
	var got []string
	for _, p := range nps {
		got = append(got, p.String())
	}
	want := []string{
		"tcp *:30080 -> 10.96.0.10:80",
		"udp *:30080 -> 10.96.0.10:53",
		"tcp *:30081 -> local [10.244.0.3:8080]",
		"tcp *:30082 -> local [10.244.0.4:8080]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("node ports:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(problems) != 1 || !strings.Contains(problems[0].Error(), "claimed by default/web:http and default/late:http") {
		t.Errorf("problems %v, want the late claim on tcp/30080", problems)
	}
	if nps[0].Proto != nft.TCP || nps[1].Proto != nft.UDP {
		t.Errorf("protocols %s, %s", nps[0].Proto, nps[1].Proto)
	}
}
