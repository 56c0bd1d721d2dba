//! `netspawnctl graph FILE`: the lab drawn without deploying it, as
//! Graphviz dot, a Mermaid flowchart, or an SVG drawn here (no Graphviz
//! needed). Zones are boxes along the top, machines below them in rows,
//! zone memberships and point-to-point links are lines labelled with the
//! interface names. With a running lab, machines carry their addresses.
//! Pure: a [`Lab`] (and the addresses seen) in, text out.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::model::Lab;

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Dot,
    Mermaid,
    Svg,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "dot" => Some(Format::Dot),
            "mermaid" => Some(Format::Mermaid),
            "svg" => Some(Format::Svg),
            _ => None,
        }
    }
}

/// Addresses of running machines, by full machine name.
pub type Live = BTreeMap<String, Vec<String>>;

/// The lab in `format`.
pub fn render(lab: &Lab, format: Format, live: &Live) -> String {
    match format {
        Format::Dot => dot(lab, live),
        Format::Mermaid => mermaid(lab, live),
        Format::Svg => svg(lab, live),
    }
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn machine_label(m: &super::model::Machine, live: &Live) -> Vec<String> {
    let mut v = vec![m.short.clone(), m.image.clone()];
    let statics: Vec<String> = m
        .addresses
        .iter()
        .map(|(i, c)| format!("{i} {c}"))
        .collect();
    v.extend(statics);
    if let Some(a) = live.get(&m.name) {
        v.extend(a.iter().cloned());
    }
    v
}

/// Graphviz dot.
pub fn dot(lab: &Lab, live: &Live) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "graph \"{}\" {{", quote(&lab.name));
    let _ = writeln!(o, "  label=\"lab {}\";", quote(&lab.name));
    let _ = writeln!(o, "  node [fontname=\"sans-serif\"];");
    for z in &lab.zones {
        let _ = writeln!(
            o,
            "  \"zone:{}\" [shape=box, style=\"rounded,filled\", fillcolor=\"#dbeafe\", label=\"zone {}\\nvz-{}\"];",
            quote(&z.short),
            quote(&z.short),
            quote(&z.name)
        );
    }
    for m in &lab.machines {
        let label = machine_label(m, live)
            .iter()
            .map(|s| quote(s))
            .collect::<Vec<_>>()
            .join("\\n");
        let _ = writeln!(
            o,
            "  \"{}\" [shape=box, label=\"{label}\"];",
            quote(&m.short)
        );
    }
    for (machine, zone, ifname) in zone_legs(lab) {
        let _ = writeln!(
            o,
            "  \"{}\" -- \"zone:{}\" [label=\"{}\"];",
            quote(machine),
            quote(zone),
            quote(ifname)
        );
    }
    for l in &lab.links {
        let _ = writeln!(
            o,
            "  \"{}\" -- \"{}\" [taillabel=\"{}\", headlabel=\"{}\", color=\"#b45309\", penwidth=2];",
            quote(&l.a.short),
            quote(&l.b.short),
            quote(&l.a.ifname),
            quote(&l.b.ifname)
        );
    }
    o.push_str("}\n");
    o
}

/// Every machine's leg on a zone: (machine's short name, zone's short name,
/// interface inside).
fn zone_legs(lab: &Lab) -> impl Iterator<Item = (&str, &str, &str)> {
    lab.machines.iter().flat_map(move |m| {
        m.zones.iter().map(move |(z, ifname)| {
            let zone = lab
                .zones
                .iter()
                .find(|x| x.name == *z)
                .map_or(z.as_str(), |x| x.short.as_str());
            (m.short.as_str(), zone, ifname.as_str())
        })
    })
}

fn mermaid_id(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;")
}

/// A Mermaid flowchart.
pub fn mermaid(lab: &Lab, live: &Live) -> String {
    let mut o = String::from("flowchart TB\n");
    for z in &lab.zones {
        let _ = writeln!(
            o,
            "  z_{}([\"zone {}\"])",
            mermaid_id(&z.short),
            mermaid_text(&z.short)
        );
    }
    for m in &lab.machines {
        let _ = writeln!(
            o,
            "  m_{}[\"{}\"]",
            mermaid_id(&m.short),
            mermaid_text(&machine_label(m, live).join("<br/>"))
        );
    }
    for (machine, zone, ifname) in zone_legs(lab) {
        let _ = writeln!(
            o,
            "  m_{} ---|{}| z_{}",
            mermaid_id(machine),
            mermaid_text(ifname),
            mermaid_id(zone)
        );
    }
    for l in &lab.links {
        let _ = writeln!(
            o,
            "  m_{} ===|\"{} - {}\"| m_{}",
            mermaid_id(&l.a.short),
            mermaid_text(&l.a.ifname),
            mermaid_text(&l.b.ifname),
            mermaid_id(&l.b.short)
        );
    }
    o
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const BOX_W: i64 = 150;
const ZONE_H: i64 = 44;
const GAP: i64 = 40;
const PER_ROW: usize = 8;
const LINE_H: i64 = 15;

/// An SVG picture.
pub fn svg(lab: &Lab, live: &Live) -> String {
    let labels: Vec<Vec<String>> = lab
        .machines
        .iter()
        .map(|m| machine_label(m, live))
        .collect();
    let box_h = 12 + LINE_H * labels.iter().map(Vec::len).max().unwrap_or(2) as i64;
    let cols = lab.machines.len().clamp(1, PER_ROW) as i64;
    let zcols = lab.zones.len().max(1) as i64;
    let width = (cols.max(zcols) * (BOX_W + GAP) + GAP).max(400);
    let zone_y = 50;
    let rows_y = zone_y + ZONE_H + 90;
    let rows = lab.machines.len().div_ceil(PER_ROW).max(1) as i64;
    let height = rows_y + rows * (box_h + 80) + 20;

    // Centres.
    let zspan = width / zcols;
    let zpos: BTreeMap<&str, (i64, i64)> = lab
        .zones
        .iter()
        .enumerate()
        .map(|(i, z)| {
            (
                z.name.as_str(),
                (zspan * i as i64 + zspan / 2, zone_y + ZONE_H / 2),
            )
        })
        .collect();
    let mpos: BTreeMap<&str, (i64, i64)> = lab
        .machines
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let row = (i / PER_ROW) as i64;
            let in_row = (lab.machines.len() - (i / PER_ROW) * PER_ROW).min(PER_ROW) as i64;
            let span = width / in_row;
            let col = (i % PER_ROW) as i64;
            (
                m.name.as_str(),
                (
                    span * col + span / 2,
                    rows_y + row * (box_h + 80) + box_h / 2,
                ),
            )
        })
        .collect();

    let mut o = String::new();
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(o, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        o,
        "<text x=\"{}\" y=\"26\" font-size=\"16\" font-weight=\"bold\">lab {}</text>",
        GAP / 2,
        xml(&lab.name)
    );
    // Lines first, boxes over them. Each line has its own spot on the
    // box's edge (zones on top, links at the bottom), so labels stay apart.
    let spot =
        |mx: i64, k: usize, n: usize| mx - BOX_W / 2 + (k as i64 + 1) * BOX_W / (n as i64 + 1);
    for m in &lab.machines {
        let (mx, my) = mpos[m.name.as_str()];
        for (k, (z, ifname)) in m.zones.iter().enumerate() {
            let Some(&(zx, zy)) = zpos.get(z.as_str()) else {
                continue;
            };
            let (x1, y1) = (spot(mx, k, m.zones.len()), my - box_h / 2);
            let (x2, y2) = (zx, zy + ZONE_H / 2);
            let _ = writeln!(
                o,
                "<line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" stroke=\"#2563eb\" stroke-width=\"1.5\"/>"
            );
            let _ = writeln!(
                o,
                "<text x=\"{x1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#1e3a8a\" font-size=\"10\">{}</text>",
                y1 - 4,
                xml(ifname)
            );
        }
    }
    // Link ends per machine, in order, for their spots.
    let mut ends: BTreeMap<&str, Vec<(usize, bool)>> = BTreeMap::new();
    for (k, l) in lab.links.iter().enumerate() {
        ends.entry(l.a.machine.as_str())
            .or_default()
            .push((k, true));
        ends.entry(l.b.machine.as_str())
            .or_default()
            .push((k, false));
    }
    let end_x = |machine: &str, k: usize, a: bool| {
        let list = &ends[machine];
        let i = list.iter().position(|e| *e == (k, a)).unwrap_or(0);
        spot(mpos[machine].0, i, list.len())
    };
    for (k, l) in lab.links.iter().enumerate() {
        let (ax, ay) = (end_x(&l.a.machine, k, true), mpos[l.a.machine.as_str()].1);
        let (bx, by) = (end_x(&l.b.machine, k, false), mpos[l.b.machine.as_str()].1);
        // A curve below the boxes, so links between neighbours stay visible.
        let bend = box_h / 2 + 30 + (k as i64 % 3) * 12;
        let (cx, cy) = ((ax + bx) / 2, ay.max(by) + bend + (ax - bx).abs() / 8);
        let _ = writeln!(
            o,
            "<path d=\"M {ax} {} Q {cx} {cy} {bx} {}\" fill=\"none\" stroke=\"#b45309\" stroke-width=\"2.5\"/>",
            ay + box_h / 2,
            by + box_h / 2
        );
        for (x, y, name) in [
            (ax, ay + box_h / 2 + 13, &l.a.ifname),
            (bx, by + box_h / 2 + 13, &l.b.ifname),
        ] {
            let _ = writeln!(
                o,
                "<text x=\"{x}\" y=\"{y}\" text-anchor=\"middle\" fill=\"#92400e\" font-size=\"10\">{}</text>",
                xml(name)
            );
        }
    }
    for z in &lab.zones {
        let (zx, zy) = zpos[z.name.as_str()];
        let _ = writeln!(
            o,
            "<rect x=\"{}\" y=\"{}\" width=\"{BOX_W}\" height=\"{ZONE_H}\" rx=\"14\" fill=\"#dbeafe\" stroke=\"#2563eb\"/>",
            zx - BOX_W / 2,
            zy - ZONE_H / 2
        );
        let _ = writeln!(
            o,
            "<text x=\"{zx}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"bold\">zone {}</text>",
            zy - 3,
            xml(&z.short)
        );
        let _ = writeln!(
            o,
            "<text x=\"{zx}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\" fill=\"#475569\">vz-{}</text>",
            zy + 12,
            xml(&z.name)
        );
    }
    for (m, label) in lab.machines.iter().zip(&labels) {
        let (mx, my) = mpos[m.name.as_str()];
        let _ = writeln!(
            o,
            "<rect x=\"{}\" y=\"{}\" width=\"{BOX_W}\" height=\"{box_h}\" rx=\"4\" fill=\"#f8fafc\" stroke=\"#334155\"/>",
            mx - BOX_W / 2,
            my - box_h / 2
        );
        for (i, line) in label.iter().enumerate() {
            let (weight, size, fill) = if i == 0 {
                ("bold", 12, "#0f172a")
            } else {
                ("normal", 10, "#475569")
            };
            let _ = writeln!(
                o,
                "<text x=\"{mx}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"{weight}\" font-size=\"{size}\" fill=\"{fill}\">{}</text>",
                my - box_h / 2 + 16 + LINE_H * i as i64,
                xml(line)
            );
        }
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::topology::model;

    fn lab() -> Lab {
        model::load(
            std::path::Path::new("/x/demo.toml"),
            r#"
[defaults]
image = "busybox"
[zones.lan]
[zones.wan]
[machines.r1]
command = "sleep 1"
zones = ["lan", "wan:eth2"]
addresses = { eth1 = "10.0.0.1/30" }
[machines.h]
count = 2
command = "sleep 1"
zones = ["lan"]
[machines.x]
command = "sleep 1"
addresses = { eth1 = "10.0.0.2/30" }
[[links]]
endpoints = ["r1:eth1", "x:eth1"]
"#,
        )
        .unwrap()
    }

    #[test]
    fn dot_names_every_machine_zone_and_link() {
        let d = dot(&lab(), &Live::new());
        assert!(d.starts_with("graph \"demo\" {"), "{d}");
        for want in [
            "\"zone:lan\" [",
            "\"h1\" [",
            "\"h2\" [",
            "\"r1\" -- \"zone:wan\" [label=\"eth2\"]",
            "\"r1\" -- \"x\" [taillabel=\"eth1\", headlabel=\"eth1\"",
            "eth1 10.0.0.1/30",
        ] {
            assert!(d.contains(want), "{want} missing in\n{d}");
        }
        assert!(d.trim_end().ends_with('}'));
    }

    #[test]
    fn mermaid_is_a_flowchart_with_both_kinds_of_edges() {
        let m = mermaid(&lab(), &Live::new());
        assert!(m.starts_with("flowchart TB\n"));
        assert!(m.contains("m_r1 ---|host0| z_lan"), "{m}");
        assert!(m.contains("m_r1 ===|\"eth1 - eth1\"| m_x"), "{m}");
    }

    #[test]
    fn svg_is_well_formed_and_shows_live_addresses() {
        let mut live = Live::new();
        live.insert("demo-h1".into(), vec!["10.9.0.5".into()]);
        let s = svg(&lab(), &live);
        assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(s.trim_end().ends_with("</svg>"));
        assert!(s.contains(">10.9.0.5</text>"));
        assert!(s.contains(">zone lan</text>"));
        // Every element that opens closes (all are self-closing or paired).
        assert_eq!(s.matches("<text").count(), s.matches("</text>").count());
    }
}
