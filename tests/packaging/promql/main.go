// promql-check parses PromQL expressions with Prometheus' own parser, so the
// packaging tests can check the dashboard's and the PrometheusRule's queries
// for syntax errors and list the metric names they select.
//
// Input (stdin): a JSON array of expression strings.
// Output (stdout): a JSON array, one object per expression, in input order:
// {"expr": ..., "error": "" or the parse error, "metrics": [names selected]}.
// Exit status: 0 even when expressions fail to parse (the caller decides);
// 2 when the input itself is not a JSON array of strings.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Expr    string   `json:"expr"`
	Error   string   `json:"error"`
	Metrics []string `json:"metrics"`
}

func check(p parser.Parser, expr string) result {
	out := result{Expr: expr, Metrics: []string{}}
	node, err := p.ParseExpr(expr)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	seen := map[string]bool{}
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			if name == "" {
				// {__name__="x"} selects by matcher instead of by name.
				for _, m := range vs.LabelMatchers {
					if m.Name == "__name__" {
						name = m.Value
					}
				}
			}
			seen[name] = true
		}
		return nil
	})
	for name := range seen {
		out.Metrics = append(out.Metrics, name)
	}
	sort.Strings(out.Metrics)
	return out
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintln(os.Stderr, "promql-check: stdin must be a JSON array of strings:", err)
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	results := make([]result, 0, len(exprs))
	for _, expr := range exprs {
		results = append(results, check(p, expr))
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "promql-check:", err)
		os.Exit(1)
	}
}
