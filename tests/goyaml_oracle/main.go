// Reference encoder for the go-yaml tests, so the Rust emitter is judged by
// gopkg.in/yaml.v3 itself. Built with the import go.yaml.in/yaml/v4 instead, it made
// the stored schematic answers of tests/data/goyaml-v4 (README there). Two modes:
//
//   - schematic (default): decodes each body (strict, first document only) into the
//     Image Factory's schematic struct and prints yaml.Marshal of it;
//   - extensions: decodes each body as JSON into Talos's extensions Config
//     (pkg/machinery/extensions/config.go) and prints what yaml.NewEncoder's Encode
//     writes, as the Talos imager writes extensions.yaml.
//
// Input on stdin: one hex-encoded body per line. Output: one line per body,
// "ok <hex of the YAML>" or "err <message>".
package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

type BootloaderKind int

var bootloaderNames = []string{"none", "dual-boot", "sd-boot", "grub"}

func (k BootloaderKind) MarshalText() ([]byte, error) { return []byte(bootloaderNames[k]), nil }

func (k *BootloaderKind) UnmarshalText(text []byte) error {
	for i, n := range bootloaderNames {
		if strings.EqualFold(n, string(text)) {
			*k = BootloaderKind(i)
			return nil
		}
	}
	return fmt.Errorf("%s does not belong to BootloaderKind values", text)
}

type Schematic struct {
	Owner         string        `yaml:"owner,omitempty"`
	Overlay       Overlay       `yaml:"overlay,omitempty"`
	Customization Customization `yaml:"customization"`
}

type Customization struct {
	EmbeddedMachineConfiguration string                  `yaml:"embeddedMachineConfiguration,omitempty"`
	ExtraKernelArgs              []string                `yaml:"extraKernelArgs,omitempty"`
	Meta                         []MetaValue             `yaml:"meta,omitempty"`
	SystemExtensions             SystemExtensions        `yaml:"systemExtensions,omitempty"`
	Bootloader                   BootloaderKind          `yaml:"bootloader,omitempty"`
	SecureBoot                   SecureBootCustomization `yaml:"secureboot,omitempty"`
	DiskImage                    DiskImageCustomization  `yaml:"diskImage,omitempty"`
}

type MetaValue struct {
	Key   uint8  `yaml:"key"`
	Value string `yaml:"value"`
}

type SystemExtensions struct {
	OfficialExtensions []string `yaml:"officialExtensions,omitempty"`
}

type Overlay struct {
	Image   string         `yaml:"image"`
	Name    string         `yaml:"name"`
	Options map[string]any `yaml:"options,omitempty"`
}

type SecureBootCustomization struct {
	EnrollKeys                   string `yaml:"enrollKeys,omitempty"`
	IncludeWellKnownCertificates bool   `yaml:"includeWellKnownCertificates,omitempty"`
}

type DiskImageCustomization struct {
	SectorSize uint `yaml:"sectorSize,omitempty"`
}

func one(body []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(body))
	dec.KnownFields(true)
	var s Schematic
	if err := dec.Decode(&s); err != nil {
		return nil, err
	}
	return yaml.Marshal(&s)
}

type Config struct {
	Layers []*Layer `yaml:"layers" json:"layers"`
}

type Layer struct {
	Image    string   `yaml:"image" json:"image"`
	Metadata Metadata `yaml:"metadata" json:"metadata"`
}

type Metadata struct {
	Name          string        `yaml:"name" json:"name"`
	Version       string        `yaml:"version" json:"version"`
	Author        string        `yaml:"author" json:"author"`
	Description   string        `yaml:"description" json:"description"`
	Compatibility Compatibility `yaml:"compatibility" json:"compatibility"`
	ExtraInfo     string        `yaml:"extraInfo,omitempty" json:"extraInfo"`
}

type Compatibility struct {
	Talos Constraint `yaml:"talos" json:"talos"`
}

type Constraint struct {
	Version string `yaml:"version" json:"version"`
}

func extensions(body []byte) ([]byte, error) {
	var cfg Config
	if err := json.Unmarshal(body, &cfg); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := yaml.NewEncoder(&buf).Encode(&cfg); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func main() {
	encode := one
	if len(os.Args) > 1 && os.Args[1] == "extensions" {
		encode = extensions
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for in.Scan() {
		body, err := hex.DecodeString(in.Text())
		if err != nil {
			fmt.Fprintf(w, "err bad hex\n")
			continue
		}
		out, err := encode(body)
		if err != nil {
			fmt.Fprintf(w, "err %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			fmt.Fprintf(w, "ok %s\n", hex.EncodeToString(out))
		}
	}
}
