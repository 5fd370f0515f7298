module github.com/relaytls/relaytls/hack/kind/pause

go 1.26.0
