//! The typed RSpec model shared by requests, manifests and advertisements.
//!
//! One set of types serves all three document kinds: attributes that only exist in some kinds
//! are `Option`s, and [`RSpec::validate`] checks the rules of the kind at hand. Every element
//! that the GENI schemas open to extensions carries `extensions` (foreign child elements, in
//! document order) and `ext_attrs` (attributes this model does not know), so that reading and
//! then writing a document keeps what the library does not understand.

use std::net::{IpAddr, Ipv4Addr};

use crate::read::values;

use smol_str::SmolStr;

use crate::xml::{XmlAttr, XmlElement};

/// The GENI RSpec v3 core namespace.
pub const GENI_V3_NS: &str = "http://www.geni.net/resources/rspec/3";
/// The Emulab/ProtoGENI extension namespace (`emulab:xen` and friends).
pub const EMULAB_NS: &str = "http://www.protogeni.net/resources/rspec/ext/emulab/1";
/// The login-user extension namespace (`user:services_user`).
pub const USER_NS: &str = "http://www.geni.net/resources/rspec/ext/user/1";
/// The operational-state extension namespace (`rspec_opstate`).
pub const OPSTATE_NS: &str = "http://www.geni.net/resources/rspec/ext/opstate/1";
/// The ProtoGENI RSpec v2 namespace, which this library refuses (see the crate docs).
pub const PROTOGENI_V2_NS: &str = "http://www.protogeni.net/resources/rspec/2";
/// The XML Schema instance namespace (`xsi:schemaLocation`).
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Which of the three RSpec document kinds a document is (the root `type` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RSpecType {
    /// What a client asks for (`Allocate`).
    Request,
    /// What the aggregate granted (`Allocate`, `Provision`, `Describe`).
    Manifest,
    /// What the aggregate offers (`ListResources`).
    Advertisement,
}

impl RSpecType {
    /// The value of the root `type` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            RSpecType::Request => "request",
            RSpecType::Manifest => "manifest",
            RSpecType::Advertisement => "advertisement",
        }
    }

    /// Parses the root `type` attribute value.
    pub fn from_attr(value: &str) -> Option<Self> {
        match value {
            "request" => Some(RSpecType::Request),
            "manifest" => Some(RSpecType::Manifest),
            "advertisement" => Some(RSpecType::Advertisement),
            _ => None,
        }
    }
}

/// A whole RSpec document: the `<rspec>` root and everything under it.
#[derive(Debug, Clone, PartialEq)]
pub struct RSpec {
    /// The document kind (`type` attribute, required).
    pub rspec_type: RSpecType,
    /// `generated`: an `xs:dateTime` such as `2025-01-01T12:00:00Z`.
    pub generated: Option<SmolStr>,
    /// `generated_by`: free text naming the producing tool.
    pub generated_by: Option<SmolStr>,
    /// `expires`: an `xs:dateTime`; a manifest must carry it.
    pub expires: Option<SmolStr>,
    /// The `<node>` elements, in document order.
    pub nodes: Vec<Node>,
    /// The `<link>` elements, in document order.
    pub links: Vec<Link>,
    /// Top-level `opstate:rspec_opstate` blocks (advertisements).
    pub opstates: Vec<Opstate>,
    /// `xsi:schemaLocation` pairs `(namespace, url)` for namespaces the writer does not
    /// already know a location for (for example the stitching schema). The writer emits its
    /// own pairs for the core, emulab and opstate namespaces.
    pub extra_schema_locations: Vec<(SmolStr, SmolStr)>,
    /// Foreign top-level elements (stitching topologies, client extensions, ...).
    pub extensions: Vec<XmlElement>,
    /// Unknown root attributes (namespace declarations and `xsi:schemaLocation` excluded).
    pub ext_attrs: Vec<XmlAttr>,
}

impl RSpec {
    /// An empty document of the given kind.
    pub fn new(rspec_type: RSpecType) -> Self {
        RSpec {
            rspec_type,
            generated: None,
            generated_by: None,
            expires: None,
            nodes: Vec::new(),
            links: Vec::new(),
            opstates: Vec::new(),
            extra_schema_locations: Vec::new(),
            extensions: Vec::new(),
            ext_attrs: Vec::new(),
        }
    }

    /// The node with this `client_id`, if any.
    pub fn node(&self, client_id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.client_id.as_deref() == Some(client_id))
    }

    /// The link with this `client_id`, if any.
    pub fn link(&self, client_id: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.client_id.as_deref() == Some(client_id))
    }

    /// The interface with this `client_id` together with the node that holds it.
    pub fn interface(&self, client_id: &str) -> Option<(&Node, &Interface)> {
        self.nodes
            .iter()
            .find_map(|n| n.interfaces.iter().find(|i| i.client_id.as_deref() == Some(client_id)).map(|i| (n, i)))
    }
}

/// A `<node>`: one sliver (request, manifest) or one offered component (advertisement).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    /// `client_id`: required in requests and manifests, absent in advertisements.
    pub client_id: Option<SmolStr>,
    /// `component_id`: the physical resource URN; makes a request node *bound*.
    pub component_id: Option<SmolStr>,
    /// `component_manager_id`: the URN of the aggregate that owns the node.
    pub component_manager_id: Option<SmolStr>,
    /// `component_name`: the short resource name.
    pub component_name: Option<SmolStr>,
    /// `exclusive`: whether the node is a whole physical machine.
    pub exclusive: Option<bool>,
    /// `sliver_id` (manifest only): the sliver URN used in AM API v3 `urns[]`.
    pub sliver_id: Option<SmolStr>,
    /// `<sliver_type>`: exactly one in a request, a list of offers in an advertisement.
    pub sliver_types: Vec<SliverType>,
    /// `<hardware_type>` elements.
    pub hardware_types: Vec<HardwareType>,
    /// `<interface>` elements.
    pub interfaces: Vec<Interface>,
    /// `<services>`.
    pub services: Option<Services>,
    /// `<host>` (manifest only).
    pub host: Option<Host>,
    /// `<location>`.
    pub location: Option<Location>,
    /// `<available>` (advertisement only).
    pub available: Option<Available>,
    /// Foreign or unknown child elements (`emulab:routable_control_ip`, `emulab:vnode`, ...).
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes (`colocate`, foreign attributes).
    pub ext_attrs: Vec<XmlAttr>,
}

impl Node {
    /// Whether the request names a physical component (bound) or leaves the choice to the AM.
    pub fn is_bound(&self) -> bool {
        self.component_id.is_some()
    }

    /// The first sliver type, which is *the* sliver type of a request or manifest node.
    pub fn sliver_type(&self) -> Option<&SliverType> {
        self.sliver_types.first()
    }
}

/// A `<sliver_type name=...>`, with its disk images and emulab VM settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SliverType {
    /// `name`, for example `emulab-xen`, `raw-pc` or `default-vm`.
    pub name: SmolStr,
    /// `<disk_image>` elements.
    pub disk_images: Vec<DiskImage>,
    /// `<emulab:xen cores ram disk>`, if present.
    pub xen: Option<EmulabXen>,
    /// Foreign child elements (`emulab:xen_ptype`, ...).
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

/// A `<disk_image>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiskImage {
    /// `name` (required): usually an image URN.
    pub name: SmolStr,
    /// `url`: where the image can be fetched.
    pub url: Option<SmolStr>,
    /// `os`, for example `Linux`.
    pub os: Option<SmolStr>,
    /// `version`, for example `22.04`.
    pub version: Option<SmolStr>,
    /// `description`: free text.
    pub description: Option<SmolStr>,
    /// `default` (advertisement only): marks the default image, usually `"true"`.
    pub default: Option<SmolStr>,
    /// Foreign child elements.
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

/// The emulab `<emulab:xen>` VM sizing element, placed inside `<sliver_type>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmulabXen {
    /// `cores`: cores to reserve; 0 or absent means no guaranteed reservation.
    pub cores: Option<u32>,
    /// `ram`: minimum RAM in megabytes.
    pub ram: Option<u64>,
    /// `disk`: minimum disk in gigabytes.
    pub disk: Option<u64>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

/// A `<hardware_type name=...>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HardwareType {
    /// `name` (required), for example `pc3000`.
    pub name: SmolStr,
    /// Foreign child elements (`emulab:node_type`, ...).
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

/// An `<interface>` of a node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Interface {
    /// `client_id`: required in requests and manifests (convention `node:if0`).
    pub client_id: Option<SmolStr>,
    /// `component_id`: the physical interface URN; required in advertisements.
    pub component_id: Option<SmolStr>,
    /// `sliver_id` (manifest only).
    pub sliver_id: Option<SmolStr>,
    /// `mac_address` (manifest only), for example `02:00:0a:0a:01:01`.
    pub mac_address: Option<SmolStr>,
    /// `<ip>` children.
    pub ips: Vec<Ip>,
    /// Foreign or unknown child elements.
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes (`component_name`, `role`, `public_ipv4` in ads, foreign ones).
    pub ext_attrs: Vec<XmlAttr>,
}

/// An `<ip address netmask type>` of an interface.
///
/// `address` and `netmask` are kept as written (the schemas leave them untyped, and real
/// documents carry `netmask=""`); [`Ip::addr`] and [`Ip::mask`] parse them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ip {
    /// `address` (required), as written, for example `10.10.1.1` or `fe80::1`.
    pub address: SmolStr,
    /// `netmask` as written: dotted (`255.255.255.0`), a prefix length (`64`), or anything
    /// else a tool wrote (Flack writes `""`).
    pub netmask: Option<SmolStr>,
    /// `type`, normally `ipv4` (the default when absent).
    pub ip_type: Option<SmolStr>,
    /// Foreign child elements (the schema allows any element of another namespace).
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

impl Ip {
    /// An `<ip>` with this address and netmask, written in their usual text form.
    pub fn new(address: IpAddr, netmask: Option<Netmask>) -> Self {
        Ip { address: address.to_string().into(), netmask: netmask.map(|m| m.to_string().into()), ..Ip::default() }
    }

    /// The address, if it parses as IPv4 or IPv6 (surrounding whitespace ignored).
    pub fn addr(&self) -> Option<IpAddr> {
        values::ip(&self.address).ok()
    }

    /// The netmask, if present and it parses as a contiguous dotted mask or a prefix length
    /// up to 128 (an empty or otherwise unparsable netmask gives `None`).
    pub fn mask(&self) -> Option<Netmask> {
        self.netmask.as_deref().and_then(|m| values::netmask(m).ok())
    }
}

/// A netmask as written in the document: both spellings are in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Netmask {
    /// Dotted quad with contiguous one bits, for example `255.255.255.0`.
    Dotted(Ipv4Addr),
    /// A prefix length, for example `24` or `64`.
    PrefixLen(u8),
}

impl Netmask {
    /// The prefix length this mask stands for.
    pub fn prefix_len(self) -> u8 {
        match self {
            // The reader accepts only contiguous masks, so counting ones is exact.
            Netmask::Dotted(mask) => u32::from(mask).count_ones() as u8,
            Netmask::PrefixLen(len) => len,
        }
    }
}

impl std::fmt::Display for Netmask {
    /// The mask as it is written in a document: dotted or a bare prefix length.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Netmask::Dotted(mask) => write!(f, "{mask}"),
            Netmask::PrefixLen(len) => write!(f, "{len}"),
        }
    }
}

/// A `<link>`: a point-to-point link or a LAN between interfaces.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Link {
    /// `client_id`: required in requests and manifests.
    pub client_id: Option<SmolStr>,
    /// `component_id`: required in advertisements.
    pub component_id: Option<SmolStr>,
    /// `component_name` (advertisement).
    pub component_name: Option<SmolStr>,
    /// `sliver_id` (manifest only).
    pub sliver_id: Option<SmolStr>,
    /// `vlantag` as written (manifest; the manifest schema requires it). Usually a tag in
    /// 0..=4095, but real manifests also carry `""` and `"unknown"`; see [`Link::vlan`].
    pub vlantag: Option<SmolStr>,
    /// `<component_manager name=...>`: one URN per aggregate the link touches.
    pub component_managers: Vec<SmolStr>,
    /// `<interface_ref>` children: the link's end points.
    pub interface_refs: Vec<InterfaceRef>,
    /// `<link_type>` children (`lan`, `gre-tunnel`, `vlan`, ...).
    pub link_types: Vec<LinkType>,
    /// `<property>` children, one per direction.
    pub properties: Vec<LinkProperty>,
    /// Foreign or unknown child elements (`emulab:trivial_ok`, `component_hop`, ...).
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

impl Link {
    /// The VLAN tag, if `vlantag` is a number in 0..=4095 (surrounding whitespace ignored).
    pub fn vlan(&self) -> Option<u16> {
        self.vlantag.as_deref().and_then(|v| values::vlantag(v).ok())
    }
}

/// An `<interface_ref>` naming one end point of a link.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InterfaceRef {
    /// `client_id` of the interface (requests and manifests).
    pub client_id: Option<SmolStr>,
    /// `component_id` of the interface (advertisements; optional in manifests).
    pub component_id: Option<SmolStr>,
    /// `sliver_id` (manifest only).
    pub sliver_id: Option<SmolStr>,
    /// Foreign child elements.
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

/// A `<link_type name=...>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkType {
    /// `name` (required), for example `lan`.
    pub name: SmolStr,
    /// `class`.
    pub class: Option<SmolStr>,
    /// Foreign child elements.
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

/// A one-direction `<property>` of a link.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkProperty {
    /// `source_id` (required): the sending interface's client_id.
    pub source_id: SmolStr,
    /// `dest_id` (required): the receiving interface's client_id.
    pub dest_id: SmolStr,
    /// `capacity` as written: a bare number is kbit/s (`100000`); advertisements also write
    /// units (`10000000kbps`, `1024MB/s`, `1G`). See [`LinkProperty::capacity_bps`].
    pub capacity: Option<SmolStr>,
    /// `latency` as written: a bare number is milliseconds. See [`LinkProperty::latency_ms`].
    pub latency: Option<SmolStr>,
    /// `packet_loss` as written: a fraction in `0.0..=1.0`. See
    /// [`LinkProperty::packet_loss_fraction`].
    pub packet_loss: Option<SmolStr>,
    /// Foreign child elements.
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

impl LinkProperty {
    /// The capacity in bits per second, if `capacity` parses: a bare number is kbit/s;
    /// a unit may follow (`bps`, `kbps`, `Mbit/s`, `Gb/s`, a bare prefix as in `1G`; an
    /// upper-case `B` is bytes, as in `1024MB/s`). Prefixes are decimal (k = 1000).
    pub fn capacity_bps(&self) -> Option<u64> {
        self.capacity.as_deref().and_then(values::bandwidth_bps)
    }

    /// The latency in milliseconds, if `latency` parses: a bare number is milliseconds; a
    /// unit may follow (`ns`, `us`, `ms`, `s`).
    pub fn latency_ms(&self) -> Option<f64> {
        self.latency.as_deref().and_then(values::latency_ms)
    }

    /// The packet loss as a fraction in `0.0..=1.0`, if `packet_loss` parses (a decimal, or a
    /// percentage such as `1%`).
    pub fn packet_loss_fraction(&self) -> Option<f64> {
        self.packet_loss.as_deref().and_then(values::loss_fraction)
    }
}

/// A node's `<services>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Services {
    /// `<login>` entries (manifest).
    pub logins: Vec<Login>,
    /// `<install>` entries; installs run before executes.
    pub installs: Vec<Install>,
    /// `<execute>` entries.
    pub executes: Vec<Execute>,
    /// `<user:services_user>` entries with the accounts' public keys (manifest).
    pub users: Vec<UserKey>,
    /// Other foreign child elements (`emulab:console`, ...).
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

/// A `<login authentication hostname port username>` entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Login {
    /// `authentication` (required), normally `ssh-keys`.
    pub authentication: SmolStr,
    /// `hostname` to ssh to.
    pub hostname: Option<SmolStr>,
    /// `port` to ssh to, as written. See [`Login::port_number`].
    pub port: Option<SmolStr>,
    /// `username` (manifest).
    pub username: Option<SmolStr>,
    /// Unknown or foreign child elements (the manifest's `<user name=...>`).
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

impl Login {
    /// The port, if `port` is a number in 0..=65535 (surrounding whitespace ignored).
    pub fn port_number(&self) -> Option<u16> {
        self.port.as_deref().and_then(|p| values::unsigned(p).ok())
    }
}

/// An `<install url install_path>` entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Install {
    /// `url` of the tarball (required in requests and manifests; an advertisement has
    /// none, which is the empty string here).
    pub url: SmolStr,
    /// `install_path` (like `url`: empty in an advertisement).
    pub install_path: SmolStr,
    /// `file_type` (advertisement only, where it is required).
    pub file_type: Option<SmolStr>,
    /// Foreign child elements.
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

/// An `<execute shell command>` entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Execute {
    /// `shell` (required), for example `sh`.
    pub shell: SmolStr,
    /// `command` (required in requests and manifests; empty in an advertisement, which
    /// only names shells).
    pub command: SmolStr,
    /// Foreign child elements.
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

/// The `<user:services_user login user_urn>` extension: one account and its SSH keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserKey {
    /// `login` (required): the account name on the node.
    pub login: SmolStr,
    /// `user_urn`: the GENI user URN.
    pub user_urn: Option<SmolStr>,
    /// `<user:public_key>` texts, such as `ssh-ed25519 AAAA... alice@laptop`.
    pub public_keys: Vec<String>,
}

/// A manifest `<host name=...>` (the schema copy allows `name` only).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Host {
    /// `name` (required): the node's DNS name.
    pub name: SmolStr,
    /// Unknown attributes (ProtoGENI's `ipv4`; not schema-valid, kept when read).
    pub ext_attrs: Vec<XmlAttr>,
}

/// A `<location country latitude longitude>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Location {
    /// `country` (required), ISO code such as `US`.
    pub country: SmolStr,
    /// `latitude` as written (`34.048810` stays so). See [`Location::latitude_deg`].
    pub latitude: Option<SmolStr>,
    /// `longitude` as written. See [`Location::longitude_deg`].
    pub longitude: Option<SmolStr>,
    /// Foreign child elements.
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

impl Location {
    /// The latitude in degrees, if `latitude` is a decimal in `-90.0..=90.0`.
    pub fn latitude_deg(&self) -> Option<f64> {
        self.latitude.as_deref().and_then(|v| values::decimal_in(v, -90.0, 90.0).ok())
    }

    /// The longitude in degrees, if `longitude` is a decimal in `-180.0..=180.0`.
    pub fn longitude_deg(&self) -> Option<f64> {
        self.longitude.as_deref().and_then(|v| values::decimal_in(v, -180.0, 180.0).ok())
    }
}

/// An advertisement's `<available now=...>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Available {
    /// `now`: whether the component can be allocated now.
    pub now: bool,
    /// Foreign child elements.
    pub extensions: Vec<XmlElement>,
    /// Unknown attributes.
    pub ext_attrs: Vec<XmlAttr>,
}

/// An `opstate:rspec_opstate` block: the operational state machine of some sliver types.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Opstate {
    /// `aggregate_manager_id` (required): the AM's URN.
    pub aggregate_manager_id: SmolStr,
    /// `start` (required): the first state after provisioning, e.g. `geni_notready`.
    pub start: SmolStr,
    /// `<sliver_type name=...>` entries this block applies to.
    pub sliver_types: Vec<SmolStr>,
    /// `<state>` entries.
    pub states: Vec<OpstateState>,
}

/// One `<state name=...>` of an opstate block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpstateState {
    /// `name` (required), e.g. `geni_ready`.
    pub name: SmolStr,
    /// `<description>` text.
    pub description: Option<String>,
    /// `<action>` entries: what a user may invoke in this state.
    pub actions: Vec<OpstateAction>,
    /// `<wait>` entries: asynchronous transitions out of this state.
    pub waits: Vec<OpstateWait>,
}

/// An `<action name next>`: a PerformOperationalAction verb valid in a state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpstateAction {
    /// `name` (required), e.g. `geni_start` or `myam_snapshot`.
    pub name: SmolStr,
    /// `next` (required): the resulting state.
    pub next: SmolStr,
    /// `<description>` text.
    pub description: Option<String>,
}

/// A `<wait type next>`: a transition that happens on its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpstateWait {
    /// `type`, e.g. `geni_success` or `geni_failure`.
    pub wait_type: Option<SmolStr>,
    /// `next` (required): the resulting state.
    pub next: SmolStr,
    /// `<description>` text.
    pub description: Option<String>,
}
