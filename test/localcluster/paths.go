package localcluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"strings"
	"unicode"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
)

// BinaryDirEnv names the environment variable that overrides where the
// kube-apiserver and etcd binaries are found.
const BinaryDirEnv = "RELAYTLS_KUBE_BIN"

const certManagerModule = "github.com/cert-manager/cert-manager"

// binaryNames are the files envtest needs in the binary directory.
var binaryNames = []string{"kube-apiserver", "etcd"}

// resolveBinaryDir returns the directory holding kube-apiserver and etcd:
// dir when set, else $RELAYTLS_KUBE_BIN, else bin/kube at the repository root.
// It fails with instructions when a binary is missing.
func resolveBinaryDir(dir string) (string, error) {
	source := "Options.BinaryDir"
	if dir == "" {
		dir, source = os.Getenv(BinaryDirEnv), "$"+BinaryDirEnv
	}
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			return "", fmt.Errorf("finding the kube binaries: %w; set $%s to the directory holding kube-apiserver and etcd", err, BinaryDirEnv)
		}
		dir, source = filepath.Join(root, "bin", "kube"), "the repository's bin/kube"
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for _, name := range binaryNames {
		path := filepath.Join(abs, name)
		info, err := os.Stat(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return "", fmt.Errorf("%s is missing (binary directory %s from %s): run `make kube-binaries` at the repository root to build kube-apiserver and etcd, or set $%s to a directory that has them", path, abs, source, BinaryDirEnv)
		case err != nil:
			return "", fmt.Errorf("checking %s: %w", path, err)
		case info.IsDir() || info.Mode()&0o111 == 0:
			return "", fmt.Errorf("%s is not an executable file: run `make kube-binaries` to rebuild it", path)
		}
	}
	return abs, nil
}

// repoRoot walks up from the working directory to the nearest go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod found in the working directory or above it")
		}
		dir = parent
	}
}

// certManagerCRDDir finds deploy/crds in the cert-manager module this program
// was built with, without running the go command when it can: from where
// the linked cert-manager sources were compiled (works in test binaries,
// which carry no module list), then from the build information, and only
// then from `go list -m`.
func certManagerCRDDir() (string, error) {
	var tried []string
	for _, find := range []func() (string, bool){certManagerDirFromSource, certManagerDirFromBuildInfo} {
		dir, ok := find()
		if !ok {
			continue
		}
		crds := filepath.Join(dir, "deploy", "crds")
		if isDir(crds) {
			return crds, nil
		}
		tried = append(tried, crds)
	}

	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", certManagerModule)
	if root, err := repoRoot(); err == nil {
		cmd.Dir = root
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err == nil {
		crds := filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds")
		if isDir(crds) {
			return crds, nil
		}
		tried = append(tried, crds)
	} else {
		tried = append(tried, fmt.Sprintf("`go list -m %s`: %v %s", certManagerModule, err, strings.TrimSpace(stderr.String())))
	}
	return "", fmt.Errorf("cannot find cert-manager's CRDs (tried %s): run `go mod download %s` in the repository, or set Options.CertManagerCRDDir to its deploy/crds directory",
		strings.Join(tried, "; "), certManagerModule)
}

// certManagerDirFromSource returns the cert-manager module directory from the
// source file name the compiler recorded for one of its functions: an
// absolute path into the module cache, or with -trimpath "module@version/...",
// which is then looked up in the module cache.
func certManagerDirFromSource() (string, bool) {
	fn := runtime.FuncForPC(reflect.ValueOf(cmapi.Resource).Pointer())
	if fn == nil {
		return "", false
	}
	file, _ := fn.FileLine(fn.Entry())
	file = filepath.ToSlash(file)
	const suffix = "/pkg/apis/certmanager/v1/register.go"
	if !strings.HasSuffix(file, suffix) {
		return "", false
	}
	dir := filepath.FromSlash(strings.TrimSuffix(file, suffix))
	if !filepath.IsAbs(dir) {
		cache := moduleCache()
		if cache == "" {
			return "", false
		}
		dir = filepath.Join(cache, dir)
	}
	return dir, true
}

// certManagerDirFromBuildInfo returns the module cache directory of the
// cert-manager version linked into this binary.
func certManagerDirFromBuildInfo() (string, bool) {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "", false
	}
	for _, dep := range info.Deps {
		if dep.Path != certManagerModule {
			continue
		}
		mod := dep
		if dep.Replace != nil {
			mod = dep.Replace
		}
		if mod.Version == "" { // replaced by a local directory
			if filepath.IsAbs(mod.Path) {
				return mod.Path, true
			}
			return "", false
		}
		cache := moduleCache()
		if cache == "" {
			return "", false
		}
		return filepath.Join(cache, escapeModulePath(mod.Path)+"@"+escapeModulePath(mod.Version)), true
	}
	return "", false
}

// moduleCache mirrors the go command's choice of GOMODCACHE.
func moduleCache() string {
	if dir := os.Getenv("GOMODCACHE"); dir != "" {
		return dir
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		gopath = filepath.Join(home, "go")
	}
	return filepath.Join(filepath.SplitList(gopath)[0], "pkg", "mod")
}

// escapeModulePath applies the module cache's case encoding: every upper-case
// letter becomes '!' followed by its lower-case form.
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if unicode.IsUpper(r) {
			b.WriteByte('!')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isDir(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.IsDir()
}
