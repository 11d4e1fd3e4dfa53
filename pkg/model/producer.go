package model

import (
	"encoding/json"
	"strings"
)

// MaxProducerConfig bounds the config blob read for ProducerFacts.
const MaxProducerConfig = 1 << 20

// ProducerFacts reads what another producer's config blob says of a
// model: a Docker model's format, quantization, parameters, architecture,
// size and creation time; a KitOps Kitfile's package name, version,
// description and authors. Keys are as listed in docs/format.md ("What
// modelreg reads"); nil when the format has none or the config does not
// parse.
func ProducerFacts(format string, config []byte) map[string]string {
	out := map[string]string{}
	set := func(k, v string) {
		if v = strings.TrimSpace(v); v != "" {
			out[k] = v
		}
	}
	switch format {
	case "docker-model":
		var c struct {
			Config struct {
				Format, Quantization, Parameters, Architecture, Size string
			} `json:"config"`
			Descriptor struct {
				Created string `json:"created"`
			} `json:"descriptor"`
		}
		if json.Unmarshal(config, &c) != nil {
			return nil
		}
		set("format", c.Config.Format)
		set("quantization", c.Config.Quantization)
		set("parameters", c.Config.Parameters)
		set("architecture", c.Config.Architecture)
		set("size", c.Config.Size)
		set("created", c.Descriptor.Created)
	case "kitops":
		var k struct {
			Package struct {
				Name, Version, Description string
				Authors                    []string
			} `json:"package"`
		}
		if json.Unmarshal(config, &k) != nil {
			return nil
		}
		set("name", k.Package.Name)
		set("version", k.Package.Version)
		set("description", k.Package.Description)
		set("authors", strings.Join(k.Package.Authors, ", "))
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
