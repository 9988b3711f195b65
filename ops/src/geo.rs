//! GeoJSON values as expressions compare them (`CmpGeo`, op 8): a point within a region, or a
//! region containing a point. Parses the shapes Aerospike accepts (Point, Polygon,
//! MultiPolygon and its own AeroCircle) from a GeoJSON particle or literal.
//!
//! Judged on the sphere as Aerospike's S2 judges them: a polygon's edges are great-circle arcs
//! (not lines of constant latitude: the top edge of a 2-degree square at 38° N bulges ~300 m
//! north in its middle, and CE counts a point there as inside), its interior the side of its
//! rings that does not hold the antipode of its vertices' centre (the smaller region, for any
//! polygon within a hemisphere), and a circle is every point within its radius along the
//! great circle. Must never panic on hostile JSON: every shape is checked, and the number of
//! vertices is bounded.

use crate::error::{OpError, OpResult};

/// Mean Earth radius in meters, as S2 uses for AeroCircle radii.
pub const EARTH_RADIUS_METERS: f64 = 6_371_000.0;
/// Most vertices one region may have (Aerospike caps region cells; this bounds our work).
pub const REGION_VERTICES_MAX: usize = 65_536;

/// One parsed GeoJSON shape; coordinates are (longitude, latitude) in degrees.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Point(f64, f64),
    /// Center and radius in meters.
    Circle(f64, f64, f64),
    /// Polygons, each an outer ring followed by its holes.
    Polygons(Vec<Vec<Vec<(f64, f64)>>>),
}

fn bad<T>(why: &'static str) -> OpResult<T> {
    Err(OpError::Parameter(why))
}

/// The JSON text of a GeoJSON particle or literal: a stored particle starts with a flags byte,
/// a big-endian cell count and that many 8-byte cell ids before the JSON; a literal is the
/// JSON alone.
fn json_of(bytes: &[u8]) -> OpResult<&[u8]> {
    if bytes
        .first()
        .is_some_and(|b| *b == b'{' || b.is_ascii_whitespace())
    {
        return Ok(bytes);
    }
    if bytes.len() < 3 {
        return bad("GeoJSON value too short");
    }
    let cells = usize::from(u16::from_be_bytes([bytes[1], bytes[2]]));
    let start = 3 + cells * 8;
    bytes
        .get(start..)
        .map_or_else(|| bad("GeoJSON cell ids run past the value"), Ok)
}

fn coord(v: &serde_json::Value) -> OpResult<(f64, f64)> {
    match v.as_array().map(Vec::as_slice) {
        Some([lon, lat, ..]) => match (lon.as_f64(), lat.as_f64()) {
            (Some(lon), Some(lat)) if lon.abs() <= 180.0 && lat.abs() <= 90.0 => Ok((lon, lat)),
            _ => bad("GeoJSON coordinate out of range"),
        },
        _ => bad("GeoJSON coordinate is not [longitude, latitude]"),
    }
}

fn polygon(v: &serde_json::Value, vertices: &mut usize) -> OpResult<Vec<Vec<(f64, f64)>>> {
    let Some(rings) = v.as_array() else {
        return bad("GeoJSON polygon is not a list of rings");
    };
    if rings.is_empty() {
        return bad("GeoJSON polygon has no ring");
    }
    rings
        .iter()
        .map(|ring| {
            let Some(points) = ring.as_array() else {
                return bad("GeoJSON ring is not a list of points");
            };
            *vertices += points.len();
            if points.len() < 4 || *vertices > REGION_VERTICES_MAX {
                return bad("GeoJSON ring has under 4 or too many points");
            }
            points.iter().map(coord).collect()
        })
        .collect()
}

/// Most vertices of a ring checked for crossing itself (the check compares every pair of
/// edges: a million pairs, about a millisecond); larger rings are taken as they are.
pub const RING_CHECK_VERTICES_MAX: usize = 1024;

/// A GeoJSON value a write may store, as Aerospike decides: it parses, and no ring of a
/// polygon crosses itself. Like CE, a circle's radius is not checked: `Ok(None)` is an
/// AeroCircle whose radius is not a non-negative number (stored, but no shape to judge).
pub fn validate(bytes: &[u8]) -> OpResult<Option<Shape>> {
    let shape = parse_any_radius(bytes)?;
    if let Some(shape) = &shape {
        check_rings(shape)?;
    }
    Ok(shape)
}

/// Refuses a polygon with a ring that crosses itself (rings of up to
/// [`RING_CHECK_VERTICES_MAX`] vertices are checked), as Aerospike refuses to store or query
/// with one.
pub fn check_rings(shape: &Shape) -> OpResult<()> {
    if let Shape::Polygons(polygons) = shape {
        for ring in polygons.iter().flatten() {
            if ring.len() <= RING_CHECK_VERTICES_MAX && crosses_itself(ring) {
                return bad("GeoJSON ring crosses itself");
            }
        }
    }
    Ok(())
}

/// Whether two edges of a closed ring cross (edges sharing a vertex are not compared).
fn crosses_itself(ring: &[(f64, f64)]) -> bool {
    let v: Vec<Vec3> = ring.iter().copied().map(unit).collect();
    let edges = v.len() - 1;
    (0..edges).any(|i| {
        ((i + 2)..edges)
            .filter(|&j| !(i == 0 && j == edges - 1))
            .any(|j| arcs_cross(v[i], v[i + 1], v[j], v[j + 1]))
    })
}

/// Parses a GeoJSON particle or literal into a shape.
pub fn parse(bytes: &[u8]) -> OpResult<Shape> {
    match parse_any_radius(bytes)? {
        Some(shape) => Ok(shape),
        None => bad("AeroCircle radius is not a non-negative number"),
    }
}

/// [`parse`], with `None` for an AeroCircle whose radius is not a non-negative number.
fn parse_any_radius(bytes: &[u8]) -> OpResult<Option<Shape>> {
    let json: serde_json::Value = serde_json::from_slice(json_of(bytes)?)
        .map_err(|_| OpError::Parameter("invalid GeoJSON"))?;
    let coords = &json["coordinates"];
    let mut vertices = 0;
    match json["type"].as_str() {
        Some("Point") => {
            let (lon, lat) = coord(coords)?;
            Ok(Some(Shape::Point(lon, lat)))
        }
        Some("AeroCircle") => match coords.as_array().map(Vec::as_slice) {
            Some([center, radius]) => {
                let (lon, lat) = coord(center)?;
                Ok(radius
                    .as_f64()
                    .filter(|r| *r >= 0.0 && r.is_finite())
                    .map(|r| Shape::Circle(lon, lat, r)))
            }
            _ => bad("AeroCircle needs [[longitude, latitude], radius]"),
        },
        Some("Polygon") => Ok(Some(Shape::Polygons(vec![polygon(coords, &mut vertices)?]))),
        Some("MultiPolygon") => match coords.as_array() {
            Some(polys) if !polys.is_empty() => Ok(Some(Shape::Polygons(
                polys
                    .iter()
                    .map(|p| polygon(p, &mut vertices))
                    .collect::<OpResult<_>>()?,
            ))),
            _ => bad("MultiPolygon has no polygon"),
        },
        _ => bad("unsupported GeoJSON type"),
    }
}

/// Great-circle distance in meters (haversine).
fn distance_meters((lon1, lat1): (f64, f64), (lon2, lat2): (f64, f64)) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_METERS * a.sqrt().min(1.0).asin()
}

/// A point of the unit sphere.
pub type Vec3 = [f64; 3];

/// A (longitude, latitude) in degrees as a unit vector.
pub fn unit((lon, lat): (f64, f64)) -> Vec3 {
    let (lon, lat) = (lon.to_radians(), lat.to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

pub fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Whether the great-circle arcs a–b and c–d (each shorter than half a circle) cross at a
/// point interior to both: the four triangles they make turn consistently.
pub fn arcs_cross(a: Vec3, b: Vec3, c: Vec3, d: Vec3) -> bool {
    let ab = cross(a, b);
    let acb = -dot(ab, c);
    let bda = dot(ab, d);
    if acb * bda <= 0.0 {
        return false;
    }
    let cd = cross(c, d);
    let cbd = -dot(cd, b);
    let dac = dot(cd, a);
    acb * cbd > 0.0 && acb * dac > 0.0
}

/// Whether `p` lies inside a ring of `vertices` (closed: the last repeats the first) whose
/// outside holds `outside`: the arc from `p` to `outside` crosses the ring's edges an odd
/// number of times.
fn in_ring(vertices: &[Vec3], p: Vec3, outside: Vec3) -> bool {
    vertices
        .windows(2)
        .filter(|e| arcs_cross(p, outside, e[0], e[1]))
        .count()
        % 2
        == 1
}

/// A point surely outside a polygon: the antipode of its outer ring's vertices' centre, moved
/// off any vertex (so no edge passes through it).
fn outside_of(ring: &[Vec3]) -> Vec3 {
    let mut c = [0.0; 3];
    for v in ring {
        for i in 0..3 {
            c[i] -= v[i];
        }
    }
    // A tiny fixed tilt keeps the reference off the ring's own great circles.
    c[0] += 1e-9;
    c[1] += 2e-9;
    if dot(c, c).sqrt() < 1e-12 {
        return unit((0.0, -90.0));
    }
    normalized(c)
}

/// `v` scaled to unit length (`v` must not be zero).
pub fn normalized(v: Vec3) -> Vec3 {
    let n = dot(v, v).sqrt();
    [v[0] / n, v[1] / n, v[2] / n]
}

fn polygon_contains(rings: &[Vec<(f64, f64)>], p: (f64, f64)) -> bool {
    SpherePolygon::new(rings).contains(unit(p))
}

/// A polygon's rings as unit vectors (each closed: its last vertex repeats its first), with a
/// point outside it, for repeated containment tests (a geo index's covering).
#[derive(Debug, Clone)]
pub struct SpherePolygon {
    pub rings: Vec<Vec<Vec3>>,
    outside: Vec3,
}

impl SpherePolygon {
    /// `rings`: an outer ring then its holes, (longitude, latitude) in degrees, as
    /// [`parse`] gives them (at least 4 vertices each).
    pub fn new(rings: &[Vec<(f64, f64)>]) -> SpherePolygon {
        let rings: Vec<Vec<Vec3>> = rings
            .iter()
            .map(|r| r.iter().copied().map(unit).collect())
            .collect();
        let outside = outside_of(&rings[0]);
        SpherePolygon { rings, outside }
    }

    /// Whether `p` is inside the outer ring and outside every hole.
    pub fn contains(&self, p: Vec3) -> bool {
        in_ring(&self.rings[0], p, self.outside)
            && !self.rings[1..]
                .iter()
                .any(|hole| in_ring(hole, p, self.outside))
    }
}

fn region_contains(region: &Shape, p: (f64, f64)) -> bool {
    match region {
        Shape::Point(..) => false,
        Shape::Circle(lon, lat, r) => distance_meters((*lon, *lat), p) <= *r,
        Shape::Polygons(polys) => polys.iter().any(|rings| polygon_contains(rings, p)),
    }
}

/// CmpGeo(a, b): true when a point lies within a region, whichever side each is on. Two
/// points or two regions never match.
pub fn matches(a: &Shape, b: &Shape) -> bool {
    match (a, b) {
        (Shape::Point(lon, lat), region) | (region, Shape::Point(lon, lat)) => {
            region_contains(region, (*lon, *lat))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_within_circles_and_polygons() {
        let point = parse(br#"{"type":"Point","coordinates":[-132.0,37.5]}"#).unwrap();
        let circle = parse(br#"{"type":"AeroCircle","coordinates":[[-132.0,37.5],1000]}"#).unwrap();
        assert!(matches(&point, &circle));
        assert!(matches(&circle, &point));
        let far = parse(br#"{"type":"Point","coordinates":[-60.5,20]}"#).unwrap();
        assert!(!matches(&far, &circle));
        // Great-circle edges, as Aerospike CE 8.1.2.0 answered for this square: its top edge
        // bulges north (38.003 N is inside), its bottom edge too (36.003 N is outside).
        let sq = parse(
            br#"{"type":"Polygon","coordinates":[[[-123,36],[-121,36],[-121,38],
            [-123,38],[-123,36]]]}"#,
        )
        .unwrap();
        for (lat, inside) in [
            (38.003, true),
            (38.01, false),
            (36.003, false),
            (36.01, true),
        ] {
            assert_eq!(matches(&Shape::Point(-122.0, lat), &sq), inside, "{lat}");
        }
        // Across the antimeridian, and a hole.
        let wrap = parse(
            br#"{"type":"Polygon","coordinates":[[[179,-1],[-179,-1],[-179,1],
            [179,1],[179,-1]]]}"#,
        )
        .unwrap();
        assert!(matches(&Shape::Point(180.0, 0.0), &wrap));
        assert!(matches(&Shape::Point(-179.5, 0.5), &wrap));
        assert!(!matches(&Shape::Point(0.0, 0.0), &wrap));
        let holed = parse(
            br#"{"type":"Polygon","coordinates":[[[0,0],[4,0],[4,4],[0,4],[0,0]],
            [[1,1],[3,1],[3,3],[1,3],[1,1]]]}"#,
        )
        .unwrap();
        assert!(matches(&Shape::Point(0.5, 2.0), &holed));
        assert!(!matches(&Shape::Point(2.0, 2.0), &holed));
        let square = br#"{"type":"Polygon","coordinates":[[[-122.5,37.0],[-121.0,37.0],
            [-121.0,38.08],[-122.5,38.08],[-122.5,37.0]]]}"#;
        let square = parse(square).unwrap();
        let inside = Shape::Point(-122.0, 37.5);
        assert!(matches(&inside, &square));
        assert!(!matches(&far, &square));
        assert!(!matches(&point, &point));
        // A stored particle: flags, a cell count of 1 and one cell id before the JSON.
        let mut stored = vec![0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        stored.extend_from_slice(br#"{"type":"Point","coordinates":[-122.0,37.5]}"#);
        assert_eq!(parse(&stored).unwrap(), inside);
    }

    #[test]
    fn rings_crossing_themselves_are_invalid_as_aerospike_says() {
        // CE 8.1.2.0 refused the first with 160 on a put, stored the others. (It also refuses
        // regions whose covering at min-level exceeds max-cells, e.g. the ring
        // [-90,-10] [0,-10] [90,-10] [90,60] [0,60] [-90,60]: not checked here.)
        for (ring, ok) in [
            ("[[0,0],[10,10],[10,0],[0,10],[0,0]]", false),
            ("[[0,0],[10,0],[10,10],[5,-5],[0,10],[0,0]]", false),
            ("[[0,0],[5,0],[5,0],[5,5],[0,5],[0,0]]", true),
            ("[[0,0],[5,0],[5,5],[0,5],[0,0]]", true),
        ] {
            let json = format!(r#"{{"type":"Polygon","coordinates":[{ring}]}}"#);
            assert_eq!(validate(json.as_bytes()).is_ok(), ok, "{ring}");
        }
        let circle = br#"{"type":"AeroCircle","coordinates":[[0,0],-5]}"#;
        assert!(validate(circle).is_ok(), "CE stores a negative radius");
        assert!(validate(br#"{"type":"Blah","coordinates":[1,2]}"#).is_err());
    }

    #[test]
    fn bad_geojson_is_a_parameter_error() {
        for bad in [
            &b"{"[..],
            br#"{"type":"Point","coordinates":[500,0]}"#,
            br#"{"type":"Line","coordinates":[]}"#,
            br#"{"type":"Polygon","coordinates":[[[0,0],[1,1]]]}"#,
            br#"{"type":"AeroCircle","coordinates":[[0,0],-1]}"#,
            &[0, 0, 9][..],
        ] {
            assert_eq!(parse(bad).unwrap_err().result_code(), 4, "{bad:?}");
        }
    }
}
