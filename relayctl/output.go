package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/jsonpath"
	"sigs.k8s.io/yaml"

	"github.com/relaytls/relaytls/relayctl/internal/initcmd"
)

// output is a command's -o/--output flag: json, yaml or
// jsonpath=TEMPLATE, as kubectl spells them, and on a command whose
// default is a text report, text.
type output struct {
	format  string
	formats []string
}

func addOutput(cmd *cobra.Command, help string, formats ...string) *output {
	o := &output{formats: formats}
	cmd.Flags().StringVarP(&o.format, "output", "o", "", help+" ("+strings.Join(o.names(), "|")+")")
	_ = cmd.RegisterFlagCompletionFunc("output", fixedCompletion(o.names()...))
	return o
}

// addTextOutput is addOutput for a command that prints a text report by
// default: -o text, the default, is that report, and the formats are data.
func addTextOutput(cmd *cobra.Command, help string, formats ...string) *output {
	o := &output{formats: append([]string{"text"}, formats...)}
	cmd.Flags().StringVarP(&o.format, "output", "o", "text", help+" ("+strings.Join(o.names(), "|")+")")
	_ = cmd.RegisterFlagCompletionFunc("output", fixedCompletion(o.names()...))
	return o
}

func (o *output) names() []string {
	var n []string
	for _, f := range o.formats {
		if f == "jsonpath" {
			f = "jsonpath=TEMPLATE"
		}
		n = append(n, f)
	}
	return n
}

func (o *output) given() bool { return o.format != "" }

// data reports whether the chosen format is data rather than the text report.
func (o *output) data() bool { return o.format != "" && o.format != "text" }

// validate refuses a format the command does not print.
func (o *output) validate(cmd *cobra.Command) error {
	if o.format == "" {
		return nil
	}
	kind, tmpl, _ := strings.Cut(o.format, "=")
	if !slices.Contains(o.formats, kind) {
		return usagef(cmd, "-o %q: %s prints %s", o.format, cmd.Name(), strings.Join(o.names(), ", "))
	}
	if kind == "jsonpath" {
		if tmpl == "" {
			return usagef(cmd, "-o jsonpath needs a template, e.g. -o jsonpath='{.items[*].metadata.name}'")
		}
		if err := jsonpath.New("output").Parse(tmpl); err != nil {
			return usagef(cmd, "-o %s: %v", o.format, err)
		}
	} else if tmpl != "" {
		return usagef(cmd, "-o %s takes no template", kind)
	}
	return nil
}

// print writes v (any value that marshals to JSON) in the chosen format.
func (o *output) print(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	kind, tmpl, _ := strings.Cut(o.format, "=")
	switch kind {
	case "json":
		var buf bytes.Buffer
		if err := json.Indent(&buf, b, "", "    "); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err = w.Write(buf.Bytes())
		return err
	case "yaml":
		y, err := yaml.JSONToYAML(b)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	case "jsonpath":
		var data any
		if err := json.Unmarshal(b, &data); err != nil {
			return err
		}
		jp := jsonpath.New("output")
		if err := jp.Parse(tmpl); err != nil {
			return err
		}
		if err := jp.Execute(w, data); err != nil {
			return fmt.Errorf("-o jsonpath: %w", err)
		}
		_, err = fmt.Fprintln(w)
		return err
	}
	return fmt.Errorf("unknown output format %q", o.format)
}

// printObjects writes objects: YAML as a multi-document stream (ready for
// kubectl apply -f or a GitOps repository), the other formats on a v1 List.
func (o *output) printObjects(w io.Writer, objs []*unstructured.Unstructured) error {
	if o.format == "yaml" {
		return initcmd.YAML(w, objs)
	}
	items := make([]any, len(objs))
	for i, obj := range objs {
		items[i] = obj.Object
	}
	return o.print(w, map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
}
