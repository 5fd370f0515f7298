package server

import (
	"io"
	"net"

	proxyproto "github.com/pires/go-proxyproto"
)

// ClusterTLV is the PROXY protocol v2 TLV type (in the custom range) whose
// value is the verified cluster name of the agent.
const ClusterTLV = proxyproto.PP2_TYPE_MIN_CUSTOM

// writeProxyHeader writes a PROXY v2 header for an agent at src to w.
func writeProxyHeader(w io.Writer, src net.Addr, cluster string) error {
	var h *proxyproto.Header
	if tcp, ok := src.(*net.TCPAddr); ok {
		dst := &net.TCPAddr{IP: net.IPv4zero, Port: 0}
		if tcp.IP.To4() == nil {
			dst = &net.TCPAddr{IP: net.IPv6zero, Port: 0}
		}
		h = proxyproto.HeaderProxyFromAddrs(2, tcp, dst)
	} else {
		h = &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	}
	if err := h.SetTLVs([]proxyproto.TLV{{Type: ClusterTLV, Value: []byte(cluster)}}); err != nil {
		return err
	}
	_, err := h.WriteTo(w)
	return err
}
