// yaml2json reads a manifest as kubelet reads a static-pod file: apimachinery's yaml.ToJSON,
// which passes text that starts with '{' through as JSON and otherwise calls sigs.k8s.io/yaml's
// YAMLToJSON (go-yaml v2 underneath, YAML 1.1 scalars, no target type), from Debian's packages
// (ToJSON's few lines are copied here: apimachinery is not packaged offline). It takes
// a JSON array of YAML texts on stdin and prints a JSON array with, for each, {"json": the
// JSON kubelet's decoder would see} or {"error": why it refused}: tests/e2e/kubelet_yaml.rs
// compares tidelet's reading with it, case by case.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"sigs.k8s.io/yaml"
)

type result struct {
	JSON  json.RawMessage `json:"json,omitempty"`
	Error string          `json:"error,omitempty"`
}

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var texts []string
	if err := json.Unmarshal(in, &texts); err != nil {
		fmt.Fprintln(os.Stderr, "stdin: want a JSON array of strings:", err)
		os.Exit(2)
	}
	out := make([]result, 0, len(texts))
	for _, t := range texts {
		j, err := toJSON([]byte(t))
		if err != nil {
			out = append(out, result{Error: err.Error()})
			continue
		}
		out = append(out, result{JSON: j})
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}

// toJSON is k8s.io/apimachinery/pkg/util/yaml.ToJSON: JSON passes through (here checked, as
// the decoder after it would), YAML is converted.
func toJSON(data []byte) ([]byte, error) {
	if hasJSONPrefix(data) {
		if !json.Valid(data) {
			return nil, fmt.Errorf("invalid JSON")
		}
		return data, nil
	}
	return yaml.YAMLToJSON(data)
}

// hasJSONPrefix is apimachinery's: the first non-space byte is '{'.
func hasJSONPrefix(buf []byte) bool {
	trim := bytes.TrimLeft(buf, " \t\r\n")
	return bytes.HasPrefix(trim, []byte("{"))
}
