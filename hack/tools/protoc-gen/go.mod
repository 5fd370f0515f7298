// Module protoc-gen pins the protoc plugins that write the issuance
// protocol's Go code (issuer/issuance/v1). protoc-gen-go is kept no newer than
// the google.golang.org/protobuf runtime of the main module, so the generated
// code never needs a runtime the product does not ship; buf has a module of
// its own (../buf) because it requires a newer one.
module github.com/relaytls/relaytls/hack/tools/protoc-gen

go 1.26.0

require (
	google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.6.2
	google.golang.org/protobuf v1.36.11
)
