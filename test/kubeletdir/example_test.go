package kubeletdir_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/relaytls/relaytls/test/kubeletdir"
)

// A Secret update as a pod sees it: the key path stays the same, the
// content behind it changes in one atomic swap.
func Example() {
	base, _ := os.MkdirTemp("", "secret")
	defer os.RemoveAll(base)
	d, _ := kubeletdir.New(filepath.Join(base, "relay-tls-client-secret"))

	_ = d.Write(map[string][]byte{"tls.crt": []byte("first")})
	b, _ := os.ReadFile(d.File("tls.crt"))
	fmt.Println(string(b))

	_ = d.Write(map[string][]byte{"tls.crt": []byte("second")})
	b, _ = os.ReadFile(d.File("tls.crt"))
	fmt.Println(string(b))
	link, _ := os.Readlink(d.File("tls.crt"))
	fmt.Println(link)
	// Output:
	// first
	// second
	// ..data/tls.crt
}
