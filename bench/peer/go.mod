// A wrapper module for the peer of the side-by-side benchmark (issue #14):
// prometheus-am-executor, which runs a command per Alertmanager webhook.
// v1.0.0 is the newest version the Go module proxy serves (its v2 tags have a
// go.mod without the /v2 suffix, so the proxy refuses them).
module trm-sre.local/bench/peer

go 1.24.0

tool github.com/imgix/prometheus-am-executor

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.1.1 // indirect
	github.com/golang/protobuf v1.4.0 // indirect
	github.com/imgix/prometheus-am-executor v1.0.0 // indirect
	github.com/matttproud/golang_protobuf_extensions v1.0.1 // indirect
	github.com/prometheus/alertmanager v0.20.0 // indirect
	github.com/prometheus/client_golang v1.6.0 // indirect
	github.com/prometheus/client_model v0.2.0 // indirect
	github.com/prometheus/common v0.9.1 // indirect
	github.com/prometheus/procfs v0.0.11 // indirect
	github.com/shurcooL/httpfs v0.0.0-20190707220628-8d4bc4ba7749 // indirect
	github.com/shurcooL/vfsgen v0.0.0-20181202132449-6a9ea43bcacd // indirect
	golang.org/x/sys v0.0.0-20200420163511-1957bb5e6d1f // indirect
	google.golang.org/protobuf v1.21.0 // indirect
	gopkg.in/yaml.v2 v2.2.5 // indirect
)
